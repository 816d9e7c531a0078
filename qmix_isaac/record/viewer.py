"""Watch the greedy team live in a MuJoCo viewer window, whichever engine simulates.

ESC quits, V toggles real-time sync (as in IsaacGymEnvs). World 0 is shown; the camera follows
the box and goal. ``max_steps`` (train.py's ``viewer_steps``) ends the playback after that many policy
steps. Without a display (no ``DISPLAY``, or no window can open on it) :func:`play` says so and
returns False, and the caller falls back to headless evaluation.
"""
from __future__ import annotations

import os
import threading
import time

import torch

__all__ = ["play"]

KEY_ESCAPE, KEY_V = 256, 86  # GLFW key codes, as launch_passive's key_callback receives them


def window_problem() -> str:
    """'' when GLFW can open an OpenGL window here, else why not. Probed on this thread because
    ``launch_passive`` opens its window on a thread of its own, where a failure ends the process
    (or leaves the caller waiting) instead of raising."""
    try:
        import glfw
    except ImportError as exc:
        return str(exc)
    reporting, glfw.ERROR_REPORTING = glfw.ERROR_REPORTING, "ignore"
    try:
        if not glfw.init():
            return "GLFW cannot initialise on DISPLAY=%s" % os.environ.get("DISPLAY")
        glfw.window_hint(glfw.VISIBLE, glfw.FALSE)
        window = glfw.create_window(16, 16, "probe", None, None)
        glfw.default_window_hints()
        if not window:
            return "GLFW cannot open an OpenGL window on DISPLAY=%s" % os.environ.get("DISPLAY")
        glfw.destroy_window(window)
        return ""
    finally:
        glfw.ERROR_REPORTING = reporting


def _centre(shadow):
    """Half way between box and goal, as the offscreen clips frame it."""
    box, goal = shadow.box_position(), shadow.data.mocap_pos[0]
    return [(box[0] + goal[0]) / 2, (box[1] + goal[1]) / 2, 0.2]


def play(env, agent, *, max_steps: int = 0) -> bool:
    """Show the greedy team in a window until ESC, the window closes or ``max_steps`` policy
    steps (0: no limit). False (and a message) when no window can open."""
    if getattr(getattr(env, "engine", None), "viewer", None) is not None:
        return _play_in_engine_viewer(env, agent, max_steps)  # Isaac Gym draws its own window
    if not os.environ.get("DISPLAY"):
        print("[qmix-isaac] no display (DISPLAY is unset): playing headless instead", flush=True)
        return False
    problem = window_problem()
    if problem:
        print("[qmix-isaac] cannot open a viewer window (%s): playing headless instead" % problem,
              flush=True)
        return False
    try:
        import mujoco.viewer

        from qmix_isaac.record.video import WorldMirror
        from qmix_isaac.runner import GreedyTeam
        shadow = WorldMirror(env)
        keys = {"quit": False, "sync": True}

        def on_key(code: int) -> None:  # called on the window's thread, once per key press
            if code == KEY_ESCAPE:
                keys["quit"] = True
            elif code == KEY_V:
                keys["sync"] = not keys["sync"]
                print("[qmix-isaac] viewer: real-time sync %s" % ("on" if keys["sync"] else "off"),
                      flush=True)

        before = set(threading.enumerate())
        viewer = mujoco.viewer.launch_passive(shadow.model, shadow.data, key_callback=on_key,
                                              show_left_ui=False, show_right_ui=False)
        ui_threads = [t for t in threading.enumerate() if t not in before]  # the window's
    except Exception as exc:  # no GL, no GLFW window
        print("[qmix-isaac] cannot open a viewer window (%s): playing headless instead"
              % str(exc).splitlines()[0], flush=True)
        return False
    team = GreedyTeam(agent, env)
    with viewer.lock():  # the offscreen clips' view: box, team and goal in the picture
        shadow.sync()
        viewer.cam.distance, viewer.cam.elevation, viewer.cam.azimuth = 7.0, -35.0, 60.0
        viewer.cam.lookat[:] = _centre(shadow)
    print("[qmix-isaac] viewer: ESC quits, V toggles real-time sync", flush=True)
    steps = 0
    with torch.no_grad():
        while not max_steps or steps < max_steps:
            if keys["quit"] or not viewer.is_running():
                break
            steps += 1
            t0 = time.perf_counter()
            team.step()
            with viewer.lock():
                shadow.sync()
                viewer.cam.lookat[:] = _centre(shadow)
            viewer.sync()
            if keys["sync"]:
                time.sleep(max(0.0, env.dt - (time.perf_counter() - t0)))
    viewer.close()
    for t in ui_threads:  # let the window close before the interpreter exits (glfw.terminate
        t.join(timeout=10.0)  # at exit under a still-drawing window hangs or errors in X)
    print("[qmix-isaac] viewer closed after %d steps" % steps, flush=True)
    return True


def _play_in_engine_viewer(env, agent, max_steps: int) -> bool:
    """An engine with its own window (Isaac Gym, ``headless=False``) draws every step itself and
    handles ESC / V; play until it is closed or ``max_steps`` policy steps."""
    from qmix_isaac.runner import GreedyTeam
    engine = env.engine
    team = GreedyTeam(agent, env)
    steps = 0
    with torch.no_grad():
        while (not max_steps or steps < max_steps) and engine.viewer is not None:
            team.step()
            steps += 1
    print("[qmix-isaac] viewer closed after %d steps" % steps, flush=True)
    return True
