"""Learning-curve figures (PNG) from a run's history: return, success rate, ε, loss."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

__all__ = ["plot_curves"]

PANELS = (("charts/episode_return", "episode return"), ("charts/success_rate", "success rate"),
          ("charts/epsilon", "epsilon"), ("losses/td_loss", "TD loss"))


def plot_curves(history: Dict[str, List[Tuple[int, float]]], path: str, *, title: str = "",
                panels: Sequence[Tuple[str, str]] = PANELS) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_write_bytes
    import io

    shown = [(k, label) for k, label in panels if history.get(k)]
    if not shown:
        shown = [(k, k) for k in sorted(history)[:4]]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(4.2 * max(len(shown), 1), 3.2),
                             squeeze=False)
    for ax, (key, label) in zip(axes[0], shown):
        pts = history.get(key, [])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.5)
        ax.set_xlabel("env steps")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
