"""Several runs' TensorBoard curves on one figure, against env steps or simulated time.

    python bench/plot_runs.py runs/A runs/B --labels "50/s" "12.5/s" \
        --keys charts/success_rate episode/final_box_dist --x sim_seconds --out cmp.png

Runs may differ in policy rate (``controlFrequencyInv``): ``--x sim_seconds`` puts them on the
simulated time summed over all worlds (env steps x sim.dt x controlFrequencyInv, read from the
run's config.yaml), ``--x env_steps`` on decisions taken. Prints a table of every key at a few
points of the x axis too (the last logged value at or before each point).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KEYS = ["charts/success_rate", "episode/final_box_dist", "episode/rew/box_progress",
        "episode/rew/approach"]


def policy_dt(run: str) -> float:
    """Seconds of simulated time per env step of ``run`` (its config.yaml)."""
    import yaml
    with open(os.path.join(run, "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    task = cfg["task"]
    return float(task["sim"]["dt"]) * int(task["env"].get("controlFrequencyInv", 1))


def scalars(run: str, keys: List[str]) -> Dict[str, List[Tuple[int, float]]]:
    """{key: [(env steps, value)]} from the run's summaries (every event file, in order)."""
    from tensorboard.backend.event_processing import event_accumulator
    out: Dict[str, List[Tuple[int, float]]] = {k: [] for k in keys}
    for path in sorted(glob.glob(os.path.join(run, "summaries", "events.out.tfevents.*"))):
        acc = event_accumulator.EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        have = set(acc.Tags().get("scalars", []))
        for k in keys:
            if k in have:
                out[k] += [(e.step, e.value) for e in acc.Scalars(k)]
    return {k: sorted(v) for k, v in out.items()}


def value_at(points: List[Tuple[float, float]], x: float) -> str:
    """The last value logged at or before ``x``; "-" before the first or past the run's end."""
    before = [v for px, v in points if px <= x]
    if not before or x > points[-1][0] * 1.02:
        return "-"
    return "%.3f" % before[-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--labels", nargs="+")
    p.add_argument("--keys", nargs="+", default=KEYS)
    p.add_argument("--x", choices=["env_steps", "sim_seconds"], default="env_steps")
    p.add_argument("--points", type=int, default=6, help="table columns along the x axis")
    p.add_argument("--title", default="")
    p.add_argument("--out", default="runs_compared.png")
    a = p.parse_args(argv)
    labels = a.labels or [os.path.basename(r.rstrip("/")) for r in a.runs]
    if len(labels) != len(a.runs):
        p.error("--labels: %d labels for %d runs" % (len(labels), len(a.runs)))

    curves = {}
    for run, label in zip(a.runs, labels):
        scale = policy_dt(run) if a.x == "sim_seconds" else 1.0
        curves[label] = {k: [(s * scale, v) for s, v in pts] for k, pts in scalars(run, a.keys).items()}
    if not any(pts for c in curves.values() for pts in c.values()):
        p.error("none of the runs logged any of --keys %s (a mistyped key, or runs too short to "
                "log one)" % " ".join(a.keys))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from qmix_isaac.record.checkpoint import atomic_write_bytes
    import io

    fig, axes = plt.subplots(1, len(a.keys), figsize=(4.2 * len(a.keys), 3.3), squeeze=False)
    for ax, key in zip(axes[0], a.keys):
        for label, c in curves.items():
            ax.plot([x for x, _ in c[key]], [v for _, v in c[key]], lw=1.4, label=label)
        ax.set_xlabel("simulated seconds (all worlds)" if a.x == "sim_seconds" else "env steps")
        ax.set_title(key.split("/")[-1])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if a.title:
        fig.suptitle(a.title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(a.out, buf.getvalue())

    end = max(x for c in curves.values() for pts in c.values() for x, _ in pts[-1:])
    xs = [end * (i + 1) / a.points for i in range(a.points)]
    fmt = "%.3g" if a.x == "sim_seconds" else "%.2fM"
    for key in a.keys:
        print("\n%s (x = %s)" % (key, a.x))
        print("| run | " + " | ".join(fmt % (x if a.x == "sim_seconds" else x / 1e6) for x in xs) + " |")
        print("|---|" + "---:|" * len(xs))
        for label, c in curves.items():
            print("| %s | %s |" % (label, " | ".join(value_at(c[key], x) for x in xs)))
    print("\nwrote %s" % a.out)


if __name__ == "__main__":
    main()
