"""Watch the greedy team live in a MuJoCo viewer window, whichever engine simulates.

ESC quits, V toggles real-time sync (as in IsaacGymEnvs). World 0 is shown; the camera follows
the box. Without a display (no ``DISPLAY``, or the window cannot open) :func:`play` says so and
returns False, and the caller falls back to headless evaluation.
"""
from __future__ import annotations

import os
import time

import torch

__all__ = ["play"]

KEY_ESCAPE, KEY_V = 256, 86  # GLFW key codes


def play(env, agent, *, max_steps: int = 10 ** 9) -> bool:
    if not os.environ.get("DISPLAY"):
        print("[qmix-isaac] no display (DISPLAY is unset): playing headless instead", flush=True)
        return False
    try:
        import mujoco.viewer

        from qmix_isaac.qmix.spaces import ActionSpec
        from qmix_isaac.qmix.targets import greedy_actions
        from qmix_isaac.record.video import WorldMirror
        shadow = WorldMirror(env)
        keys = {"quit": False, "sync": True}

        def on_key(code: int) -> None:
            if code == KEY_ESCAPE:
                keys["quit"] = True
            elif code == KEY_V:
                keys["sync"] = not keys["sync"]

        viewer = mujoco.viewer.launch_passive(shadow.model, shadow.data, key_callback=on_key,
                                              show_left_ui=False, show_right_ui=False)
    except Exception as exc:  # no GL, no GLFW window
        print("[qmix-isaac] cannot open a viewer window (%s): playing headless instead"
              % str(exc).splitlines()[0], flush=True)
        return False
    spec = ActionSpec.from_env(env)
    E, dev = env.num_envs, env.rl_device
    obs = env.reset()
    hidden = agent.init_hidden(E)
    prev = torch.zeros(E, env.num_agents, spec.n_branches, dtype=torch.long, device=dev)
    start = torch.ones(E, dtype=torch.bool, device=dev)
    boundary = torch.zeros_like(start)
    print("[qmix-isaac] viewer: ESC quits, V toggles real-time sync", flush=True)
    with torch.no_grad():
        for _ in range(max_steps):
            if keys["quit"] or not viewer.is_running():
                break
            t0 = time.perf_counter()
            q, hidden = agent(obs["obs"], prev, start, hidden)
            action = greedy_actions(q, spec.avail_from_env(obs["avail_actions"]))
            obs, _, done, _ = env.step(spec.to_env(action))
            start, boundary, prev = boundary, done.to(torch.bool), action
            with viewer.lock():
                shadow.sync()
                viewer.cam.lookat[:] = shadow.box_position()
            viewer.sync()
            if keys["sync"]:
                time.sleep(max(0.0, env.dt - (time.perf_counter() - t0)))
    viewer.close()
    return True
