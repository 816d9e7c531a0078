"""Offscreen frames and MP4s of a task's world, whichever engine simulates it.

The world's state is read from the engine's IsaacGymEnvs-layout tensors (root states, dof
positions), written into an ``MjData`` of the same MJCF plus a goal marker, and drawn with
``mujoco.Renderer``. Headless machines need an offscreen OpenGL: set ``MUJOCO_GL`` to ``egl``
(NVIDIA) or ``osmesa`` (CPU; Debian ``libosmesa6``) BEFORE mujoco is imported —
:func:`choose_gl_backend` does that. MP4s go through imageio-ffmpeg (ffmpeg ships in its wheel).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import List

import numpy as np

__all__ = ["GLBackendError", "choose_gl_backend", "scene_with_goal", "WorldMirror", "TeamRenderer",
           "write_mp4"]


class GLBackendError(RuntimeError):
    """Offscreen frames are wanted and no offscreen OpenGL is installed (one line: what to install)."""


def _osmesa_installed() -> bool:
    """Whether PyOpenGL's OSMesa platform will find its library (it looks for these names)."""
    import ctypes
    import ctypes.util
    names = [ctypes.util.find_library("OSMesa"), "libOSMesa.so", "libOSMesa.so.8", "libOSMesa.so.6"]
    for name in filter(None, names):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def choose_gl_backend(headless: bool, offscreen: bool = True) -> str:
    """Pick MUJOCO_GL (unless the user set it): a window with a display, else, when frames are
    drawn offscreen (``offscreen``: MP4s), EGL with CUDA or OSMesa without; '' (nothing set) when
    nothing will be drawn, e.g. the viewer without a display, which plays headless. Must run
    before the first ``import mujoco``. GLBackendError when OSMesa is wanted but not installed."""
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    problem = ""
    if not headless and os.environ.get("DISPLAY") and offscreen:
        from qmix_isaac.record.viewer import window_problem  # imports glfw, not mujoco
        problem = window_problem()
        if problem:  # a DISPLAY that opens no window: draw the clips offscreen instead
            print("[qmix-isaac] no OpenGL window here (%s): video frames drawn offscreen" % problem,
                  flush=True)
    if not headless and os.environ.get("DISPLAY") and not problem:
        backend = "glfw"
    elif not offscreen:
        return ""
    else:
        try:
            import torch
            backend = "egl" if torch.cuda.is_available() else "osmesa"
        except ImportError:
            backend = "osmesa"
        if backend == "osmesa" and not _osmesa_installed():
            raise GLBackendError("frames are drawn offscreen with OSMesa without CUDA, and OSMesa "
                                 "is not installed (Debian: apt-get install libosmesa6)")
    os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def scene_with_goal(xml: str, radius: float) -> str:
    """The physics MJCF plus a non-colliding mocap disc named ``goal`` (rendering only)."""
    root = ET.fromstring(xml)
    world = root.find("worldbody")
    g = ET.SubElement(world, "body", name="goal", mocap="true", pos="0 0 0")
    ET.SubElement(g, "geom", name="goal_geom", type="cylinder", size="%g 0.01" % radius,
                  contype="0", conaffinity="0", rgba="0.1 0.85 0.2 0.7")
    return ET.tostring(root, encoding="unicode")


class WorldMirror:
    """An ``MjData`` of the task's MJCF (plus a goal marker) that mirrors world ``world`` of any
    engine: :meth:`sync` copies its root states, dof positions and goal."""

    def __init__(self, env, *, world: int = 0) -> None:
        import mujoco
        self._mj = mujoco
        self.env = env
        self.world = world
        radius = float(getattr(env, "success_radius", 0.3))
        self.model = mujoco.MjModel.from_xml_string(scene_with_goal(env.scene.xml, radius))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._actor_q = []
        for body in env.scene.actors:
            b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, body)
            self._actor_q.append(int(m.jnt_qposadr[m.body_jntadr[b]]))
        self._dof_q = [int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, j)])
                       for j in env.scene.dofs]

    def sync(self) -> None:
        """Copy world ``self.world``'s state from the engine into ``self.data``."""
        e, w = self.env.engine, self.world
        root = e.root_states[w].detach().cpu().double().numpy()
        dof = e.dof_pos[w].detach().cpu().double().numpy()
        q = self.data.qpos
        for i, adr in enumerate(self._actor_q):
            q[adr:adr + 3] = root[i, 0:3]
            q[adr + 3:adr + 7] = root[i, [6, 3, 4, 5]]          # xyzw -> wxyz
        q[self._dof_q] = dof
        goal = self.env.goal_pos[w].detach().cpu().double().numpy()
        self.data.mocap_pos[0] = [goal[0], goal[1], 0.0]
        self._mj.mj_forward(self.model, self.data)

    def box_position(self) -> np.ndarray:
        return self.env.engine.root_states[self.world, self.env.box_index, 0:3].detach().cpu().numpy()


class TeamRenderer(WorldMirror):
    """Offscreen RGB frames of world ``world`` (anything with ``engine``, ``scene``, ``goal_pos``)."""

    def __init__(self, env, *, width: int = 640, height: int = 480, world: int = 0,
                 distance: float = 7.0, elevation: float = -35.0, azimuth: float = 60.0) -> None:
        super().__init__(env, world=world)
        import mujoco
        self.model.vis.global_.offwidth = max(width, self.model.vis.global_.offwidth)
        self.model.vis.global_.offheight = max(height, self.model.vis.global_.offheight)
        self._renderer = mujoco.Renderer(self.model, height, width)
        self.camera = mujoco.MjvCamera()
        self.camera.distance, self.camera.elevation, self.camera.azimuth = distance, elevation, azimuth

    def frame(self) -> np.ndarray:
        """An RGB frame [H, W, 3] uint8 of the current state, camera on the box and goal."""
        self.sync()
        box = self.box_position()
        goal = self.data.mocap_pos[0]
        self.camera.lookat[:] = [(box[0] + goal[0]) / 2, (box[1] + goal[1]) / 2, 0.2]
        self._renderer.update_scene(self.data, camera=self.camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()


def write_mp4(path: str, frames: List[np.ndarray], fps: float = 30.0) -> str:
    """Write RGB frames [H, W, 3] uint8, all of one even size, to ``path`` (H.264) through a
    temporary file in the same folder, then rename: ``path`` is a whole clip or is not touched.
    ffmpeg's failures (imageio-ffmpeg does not check its exit code) are caught by counting the
    frames of the file it wrote. ``fps`` may be fractional (12.5 for an 80 ms policy step)."""
    import imageio_ffmpeg
    if not frames:
        raise ValueError("write_mp4: no frames")
    shape = frames[0].shape
    if len(shape) != 3 or shape[2] != 3 or shape[0] % 2 or shape[1] % 2:
        raise ValueError("write_mp4: frames must be [H, W, 3] with H and W even (H.264 in "
                         "yuv420p), got %s" % (shape,))
    odd = [i for i, f in enumerate(frames) if f.shape != shape]
    if odd:
        raise ValueError("write_mp4: frame %d is %s, frame 0 %s" % (odd[0], frames[odd[0]].shape, shape))
    h, w = shape[:2]
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, ".tmp-" + os.path.basename(path))
    try:
        writer = imageio_ffmpeg.write_frames(tmp, (w, h), fps=fps, macro_block_size=1,
                                             output_params=["-loglevel", "error"])
        writer.send(None)
        try:
            for f in frames:
                writer.send(np.ascontiguousarray(f, dtype=np.uint8))
        finally:
            writer.close()
        try:
            n, _ = imageio_ffmpeg.count_frames_and_secs(tmp)
        except (RuntimeError, OSError):
            n = 0  # no readable video in the file
        if n != len(frames):
            raise RuntimeError("ffmpeg wrote %d of %d frames to %s" % (n, len(frames), path))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
