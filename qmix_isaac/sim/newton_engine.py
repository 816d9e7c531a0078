"""Newton engine: ``newton.solvers.SolverMuJoCo`` (MuJoCo Warp) stepping E worlds with Warp.

The scene's MJCF is imported once with ``ModelBuilder.add_mjcf`` and replicated into ``num_envs``
separate worlds (each world holds its own floor, so worlds never touch). The solver gets the
physics options of the MJCF itself, read from the MuJoCo C library's compile of the same string
(``self.mj_ref``), so this engine and :class:`~qmix_isaac.sim.mujoco_engine.MujocoEngine` step
the same model; :meth:`NewtonEngine.model_mismatches` lists any field where they still differ.

State lives in Newton's flat ``State.joint_q`` / ``joint_qd`` arrays (float32), seen by torch
without a copy (``wp.to_torch``); :meth:`refresh` gathers the IsaacGymEnvs-layout views from them.
Newton's free joints carry the pose as position + quaternion xyzw and the velocity as the
*centre-of-mass* linear velocity and the angular velocity, both in the world frame; the engine
converts the linear part to the body origin at the boundary (the engine contract: qmix_isaac/sim/base.py). Motors act through
``control.mujoco.ctrl`` (MJCF motors imported with ``ctrl_direct=True``), exactly as MuJoCo's
``ctrl``. On CUDA, :meth:`simulate` replays one CUDA graph per distinct step count.

What it takes to make Newton's MuJoCo model the MJCF's (checked field by field by
``model_mismatches``, and in tests/test_engines.py): a contact gap of 0 (Newton's builder default
is 0.1 m), multi-CCD as the MJCF's flags say (Newton turns it off), no inactive root welds
(``kinematic_switchable_roots=False``), and the C compile's ``body_invweight0`` / ``dof_invweight0``
(see :meth:`NewtonEngine._align_with_mujoco`). Contact and constraint buffers are fixed-size per
world (``nconmax``, ``njmax``); :meth:`NewtonEngine.contact_stats` reports use and overflow.
MuJoCo Warp does not reset unstable worlds itself, so ``diverged`` stays False and
:meth:`~qmix_isaac.sim.base.Engine.healthy` relies on the state being finite.

Warp compiles its kernels on first use (about a minute on a CPU) into ``WARP_CACHE_PATH``, which
defaults here to ``<repo>/.warp_cache``.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Dict, List, Optional

import numpy as np
import torch

from .base import Engine
from .mj_tables import actuator_table
from .rotations import quat_rotate
from .scene import Scene

__all__ = ["NewtonEngine"]

_REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# Before warp is first imported: keep compiled kernels in the repo instead of ~/.cache.
os.environ.setdefault("WARP_CACHE_PATH", os.path.join(_REPO_ROOT, ".warp_cache"))


def _import_newton():
    try:
        import mujoco
        import newton
        import newton.solvers  # noqa: F401  (SolverMuJoCo pulls in mujoco_warp lazily)
        import warp as wp
    except ImportError as exc:
        raise ImportError("physics_engine=newton needs newton: pip install 'newton[sim]'") from exc
    return wp, newton, mujoco


def _leaf(label: str) -> str:
    """Newton labels are MJCF paths ('scene/worldbody/ant0_torso/ant0_hip_1'); the leaf is the name."""
    return label.rsplit("/", 1)[-1]


class NewtonEngine(Engine):
    """E worlds of one scene on Newton's MuJoCo Warp solver (CPU or CUDA)."""

    name = "newton"

    def __init__(
        self,
        scene: Scene,
        num_envs: int,
        device="cpu",
        *,
        nconmax: Optional[int] = None,
        njmax: Optional[int] = None,
        use_cuda_graph: bool = True,
    ):
        wp, newton, mujoco = _import_newton()
        super().__init__(scene, num_envs, device)
        if self.device.type == "cuda":  # indexed by Engine.__init__
            wp_device = "cuda:%d" % self.device.index
        elif self.device.type == "cpu":
            wp_device = "cpu"
        else:
            raise ValueError("the newton engine runs on cpu or cuda, not %s" % self.device)
        self._wp = wp
        self._newton = newton
        self.wp_device = wp.get_device(wp_device)
        E = self.num_envs

        # The MuJoCo C library's compile of the same MJCF: source of the physics options and of
        # the actuator / limit tables (so both engines read identical numbers).
        self.mj_ref = ref = mujoco.MjModel.from_xml_string(scene.xml)

        # -- model: one world from the MJCF, replicated into E separate worlds ------------------
        template = newton.ModelBuilder()
        template.default_shape_cfg.gap = 0.0  # Newton's default contact gap is 0.1 m; MJCF's is 0
        template.add_mjcf(scene.xml, ctrl_direct=True)  # motors -> control.mujoco.ctrl, as MuJoCo
        builder = newton.ModelBuilder()
        builder.default_shape_cfg.gap = 0.0
        builder.replicate(template, copy_count=E)
        self.model = model = builder.finalize(device=wp_device)

        # -- solver with the MJCF's own options --------------------------------------------------
        opt = ref.opt
        multiccd = not (opt.disableflags & int(mujoco.mjtDisableBit.mjDSBL_MULTICCD))
        ngeom_world = ref.ngeom
        if nconmax is None:  # contacts per world (the C engine allocates as it goes)
            nconmax = max(48, 2 * ngeom_world)
        if njmax is None:  # constraint rows per world: a pyramidal contact of condim 3 takes 4
            njmax = 4 * nconmax + 2 * ref.njnt + 6 * ref.neq
        self.solver = newton.solvers.SolverMuJoCo(
            model,
            solver=int(opt.solver),
            integrator=int(opt.integrator),
            cone=int(opt.cone),
            iterations=int(opt.iterations),
            ls_iterations=int(opt.ls_iterations),
            tolerance=float(opt.tolerance),
            ls_tolerance=float(opt.ls_tolerance),
            impratio=float(opt.impratio),
            enable_multiccd=multiccd,
            kinematic_switchable_roots=False,  # no inactive welds the MJCF doesn't have
            nconmax=int(nconmax),
            njmax=int(njmax),
        )
        self.solver.mjw_model.opt.timestep.fill_(self.dt)
        self._match_mujoco_models(ref, mujoco)
        self._align_with_mujoco(ref)

        self.state_0 = model.state()
        self.state_1 = model.state()
        self.control = model.control()

        # -- index maps (world 0; every world has the same layout) ------------------------------
        jpw = model.joint_count // E
        self._cpw = cpw = model.joint_coord_count // E
        self._dpw = dpw = model.joint_dof_count // E
        q_start = model.joint_q_start.numpy()
        qd_start = model.joint_qd_start.numpy()
        for w in range(1, E):
            if (q_start[w * jpw:(w + 1) * jpw] != q_start[:jpw] + w * cpw).any() or \
                    (qd_start[w * jpw:(w + 1) * jpw] != qd_start[:jpw] + w * dpw).any():
                raise RuntimeError("newton worlds do not share one joint layout")
        # Newton may merge a body's joints into one D6 joint (the ball robot's two slides), so
        # names are resolved through the MuJoCo model the solver compiled: MJCF joint -> its
        # compiled joint -> Newton joint and dof.
        jnt_newton = self.solver.mjc_jnt_to_newton_jnt.numpy()[0]
        jnt_newton_dof = self.solver.mjc_jnt_to_newton_dof.numpy()[0]
        X_p, X_c = model.joint_X_p.numpy(), model.joint_X_c.numpy()
        identity = np.array([0, 0, 0, 0, 0, 0, 1.0])
        body_com = model.body_com.numpy()
        fq, fv, com = [], [], []
        for name in scene.actors:
            b = mujoco.mj_name2id(ref, mujoco.mjtObj.mjOBJ_BODY, name)
            j = ref.body_jntadr[b] if b >= 0 else -1
            if j < 0 or int(ref.jnt_type[j]) != int(mujoco.mjtJoint.mjJNT_FREE):
                raise ValueError("actor %r has no free joint" % name)
            nj = int(jnt_newton[self._mj_jnt_of_ref[j]])
            if np.abs(X_p[nj] - identity).max() > 1e-6 or np.abs(X_c[nj] - identity).max() > 1e-6:
                raise ValueError("free joint of %r has a non-identity anchor frame in newton" % name)
            fq.append(int(q_start[nj]))
            fv.append(int(qd_start[nj]))
            com.append([float(c) for c in body_com[model.joint_child.numpy()[nj]]])
        fq_t = torch.tensor(fq, dtype=torch.long)
        fv_t = torch.tensor(fv, dtype=torch.long)
        dev = self.device
        self._pos_idx = (fq_t[:, None] + torch.arange(3)).to(dev)         # [n_actors, 3]
        self._quat_idx = (fq_t[:, None] + 3 + torch.arange(4)).to(dev)    # xyzw
        self._lin_idx = (fv_t[:, None] + torch.arange(3)).to(dev)         # COM velocity, world
        self._ang_idx = (fv_t[:, None] + 3 + torch.arange(3)).to(dev)     # world frame
        self._com = torch.tensor(com, dtype=torch.float32, device=dev).view(-1, 3)
        self._com_is_origin = bool((self._com == 0).all())
        dq, dv = [], []
        for name in scene.dofs:
            j = mujoco.mj_name2id(ref, mujoco.mjtObj.mjOBJ_JOINT, name)
            if j < 0 or int(ref.jnt_type[j]) not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
                raise ValueError("dof %r is not a hinge/slide joint of the scene" % name)
            mjj = self._mj_jnt_of_ref[j]
            nj, nd = int(jnt_newton[mjj]), int(jnt_newton_dof[mjj])
            dv.append(nd)
            dq.append(int(q_start[nj]) + nd - int(qd_start[nj]))  # 1-dof axes: one coord per dof
        self._dof_q = torch.tensor(dq, dtype=torch.long, device=dev)
        self._dof_v = torch.tensor(dv, dtype=torch.long, device=dev)
        dof_ref = getattr(getattr(model, "mujoco", None), "dof_ref", None)  # joint_q = qpos - ref
        ref_np = dof_ref.numpy()[dv] if dof_ref is not None else [0.0] * len(dv)
        self._dof_ref = torch.tensor(ref_np, dtype=torch.float32, device=dev)
        # the columns refresh reads: of joint_q pos | quat per actor, then the dofs; of joint_qd
        # lin | ang per actor, then the dofs
        self._q_cols = torch.cat([torch.cat([self._pos_idx, self._quat_idx], 1).flatten(), self._dof_q])
        self._qd_cols = torch.cat([torch.cat([self._lin_idx, self._ang_idx], 1).flatten(), self._dof_v])

        # -- actuators: MuJoCo's tables from the C compile; same order in control.mujoco.ctrl ----
        dof_j = [mujoco.mj_name2id(ref, mujoco.mjtObj.mjOBJ_JOINT, n) for n in scene.dofs]
        act_labels = list(getattr(model.mujoco, "actuator_label", []))[:ref.nu]
        ref_names = [mujoco.mj_id2name(ref, mujoco.mjtObj.mjOBJ_ACTUATOR, a) for a in range(ref.nu)]
        if ref_names != [_leaf(n) for n in act_labels]:
            raise RuntimeError("newton actuator order %s differs from MuJoCo's %s" % (act_labels, ref_names))
        self.nu = ref.nu
        act_dof, gear, lo, hi = actuator_table(mujoco, ref, dof_j)
        self._act_dof = torch.tensor(act_dof, dtype=torch.long, device=dev)
        self._gear = torch.tensor(gear, dtype=torch.float32, device=dev)
        self._ctrl_lo = torch.tensor(lo, dtype=torch.float32, device=dev)
        self._ctrl_hi = torch.tensor(hi, dtype=torch.float32, device=dev)
        self.dof_effort_limit[self._act_dof] = self._gear * torch.maximum(self._ctrl_hi.abs(), self._ctrl_lo.abs())
        for k, j in enumerate(dof_j):
            if ref.jnt_limited[j]:
                self.dof_lower[k] = float(ref.jnt_range[j, 0])
                self.dof_upper[k] = float(ref.jnt_range[j, 1])

        # -- zero-copy torch views of the Warp arrays ---------------------------------------------
        self._jq = wp.to_torch(self.state_0.joint_q).view(E, cpw)
        self._jqd = wp.to_torch(self.state_0.joint_qd).view(E, dpw)
        ctrl = getattr(getattr(self.control, "mujoco", None), "ctrl", None)  # absent without actuators
        if ref.nu and (ctrl is None or ctrl.shape[0] != E * ref.nu):
            raise RuntimeError("newton did not import the MJCF motors as control.mujoco.ctrl")
        self._ctrl = wp.to_torch(ctrl).view(E, ref.nu) if ref.nu else None
        self._reset_mask = torch.zeros(E + 1, dtype=torch.bool, device=dev)  # solver.reset: worlds + global
        self._reset_mask_wp = wp.from_torch(self._reset_mask, dtype=wp.bool)

        self._is_cuda = self.device.type == "cuda"
        self._use_graph = bool(use_cuda_graph) and self._is_cuda
        self._graphs: Dict[int, object] = {}
        self._external_capture = False  # inside a caller's CUDA graph capture (capture_scope)
        self._torch_stream_cache = None  # (torch stream, its wp.Stream): _torch_stream
        # MuJoCo Warp's per-world overflow bits, OR-ed over the steps since diagnostics() read
        # them (the solver zeroes its own before every step); its in-kernel prints are off
        self._overflow_bits = getattr(self.solver.mjw_data, "overflow", None)
        self._overflow_acc = torch.zeros(E, dtype=torch.int32, device=dev)
        self._overflow_acc_wp = wp.from_torch(self._overflow_acc, dtype=wp.int32)
        if self._overflow_bits is not None:
            from ._warp_kernels import or_into
            self._or_into = or_into
            self.solver.mjw_model.opt.warn_overflow = 0
        self._ext_graphs: List[object] = []  # Warp's records of external captures (keep their modules loaded)
        if self._is_cuda:
            # MuJoCo Warp runs its solver iterations as a conditional node of the step's graph,
            # ending when every world has converged; that needs CUDA 12.4+ (driver and toolkit),
            # and without a graph it reads the converged count back to the host every iteration.
            # Otherwise: the plain loop of opt.iterations, no early exit, no host reads.
            opt = self.solver.mjw_model.opt
            opt.graph_conditional = bool(self._use_graph and wp.is_conditional_graph_supported())
            if self._use_graph and not opt.graph_conditional:
                warnings.warn("newton: this CUDA driver or toolkit is older than 12.4, so the "
                              "solver runs all %d iterations every physics step (no early exit)"
                              % int(getattr(opt, "iterations", 100)), RuntimeWarning)
            self._stream = wp.get_stream(self.wp_device)
            self._warm_up()

        self.refresh()
        self.initial_root_states.copy_(self.root_states[0])
        self.initial_dof_pos.copy_(self.dof_pos[0])
        self._q_qd0 = torch.cat([self._jq[0], self._jqd[0]])  # the initial joint_q | joint_qd row

    # ------------------------------------------------------------------------------------------
    def _match_mujoco_models(self, ref, mujoco) -> None:
        """Pair the solver's compiled MuJoCo model (``mj``) with the C compile of the MJCF (``ref``).

        Bodies pair by name (Newton keeps MJCF names as label leaves), joints by body, type, axis
        and anchor, dofs through their joints, geoms by body and order within the body.
        """
        mj = self.solver.mj_model
        to_newton = self.solver.mjc_body_to_newton.numpy()[0]
        body_map = []  # mj body -> ref body
        for b in range(mj.nbody):
            nb = int(to_newton[b])
            rb = 0 if nb < 0 else mujoco.mj_name2id(ref, mujoco.mjtObj.mjOBJ_BODY, _leaf(self.model.body_label[nb]))
            if rb < 0:
                raise RuntimeError("body %r of the newton model is not in the MJCF" % self.model.body_label[nb])
            body_map.append(rb)
        mj_body_of_ref = {rb: b for b, rb in enumerate(body_map)}
        free, ball = int(mujoco.mjtJoint.mjJNT_FREE), int(mujoco.mjtJoint.mjJNT_BALL)
        mj_jnt_of_ref, used = [], set()
        for rj in range(ref.njnt):
            mb = mj_body_of_ref.get(int(ref.jnt_bodyid[rj]), -1)
            t = int(ref.jnt_type[rj])
            match = [j for j in range(mj.njnt) if j not in used and mj.jnt_bodyid[j] == mb and mj.jnt_type[j] == t
                     and (t in (free, ball) or np.abs(mj.jnt_axis[j] - ref.jnt_axis[rj]).max() < 1e-5)
                     and np.abs(mj.jnt_pos[j] - ref.jnt_pos[rj]).max() < 1e-5]
            if not match:
                raise RuntimeError("joint %r has no counterpart in the newton model"
                                   % mujoco.mj_id2name(ref, mujoco.mjtObj.mjOBJ_JOINT, rj))
            used.add(match[0])
            mj_jnt_of_ref.append(match[0])
        ndof = {free: 6, ball: 3}
        dof_map = [0] * mj.nv  # mj dof -> ref dof
        jnt_map = [0] * mj.njnt  # mj joint -> ref joint
        for rj, j in enumerate(mj_jnt_of_ref):
            jnt_map[j] = rj
            for k in range(ndof.get(int(ref.jnt_type[rj]), 1)):
                dof_map[mj.jnt_dofadr[j] + k] = ref.jnt_dofadr[rj] + k
        geom_map = []  # mj geom -> ref geom
        for g in range(mj.ngeom):
            rb = body_map[mj.geom_bodyid[g]]
            k = int((mj.geom_bodyid[:g] == mj.geom_bodyid[g]).sum())
            ref_geoms = np.flatnonzero(ref.geom_bodyid == rb)
            if k >= len(ref_geoms):
                raise RuntimeError("geom %d of the newton model has no counterpart in the MJCF" % g)
            geom_map.append(int(ref_geoms[k]))
        self._mj_jnt_of_ref = mj_jnt_of_ref
        self._ref_body_map, self._ref_jnt_map = body_map, jnt_map
        self._ref_dof_map, self._ref_geom_map = dof_map, geom_map

    def _align_with_mujoco(self, ref) -> None:
        """Copy the few compiled constants where Newton's MuJoCo model differs from the C compile.

        Newton compiles every body with ``simple=0``; MuJoCo's compiler marks root bodies whose
        inertial frame is the body frame as "simple" and then sets ``body_invweight0`` from the
        mass alone (1/m) instead of from the joint-space inverse inertia (e.g. 1/m vs 2/(3m) for
        the ball robot's two slides). ``invweight0`` scales the contact regularisation, so the
        C-compiled values are copied in to make both engines solve the same contacts.
        """
        wp = self._wp
        mjw = self.solver.mjw_model
        for field, values in (("body_invweight0", ref.body_invweight0[self._ref_body_map]),
                              ("dof_invweight0", ref.dof_invweight0[self._ref_dof_map])):
            arr = getattr(mjw, field)
            src = np.ascontiguousarray(np.broadcast_to(values.astype(np.float32), arr.shape[:1] + values.shape))
            arr.assign(wp.array(src, dtype=arr.dtype, device=arr.device))

    def model_mismatches(self, rtol: float = 1e-5) -> List[str]:
        """Physical fields where Newton's compiled MuJoCo model differs from the C compile (world 0).

        Compares masses, full inertia tensors (principal axes of degenerate inertias may be
        rotated differently), COM offsets, joint ranges / armature / damping / stiffness, geom
        sizes (planes excepted: infinite), friction, contact parameters, actuator tables and
        solver options. Empty when the engines step the same model.
        """
        import mujoco

        ref, mj = self.mj_ref, self.solver.mj_model
        m = self.solver.mjw_model

        def world0(name):  # MuJoCo Warp batches some fields per world: take world 0
            a = getattr(m, name).numpy()
            return a[0] if a.ndim == getattr(ref, name).ndim + 1 else a

        def inertia(diag, quat):  # full inertia tensor in the body frame
            R = np.zeros(9)
            mujoco.mju_quat2Mat(R, quat)
            R = R.reshape(3, 3)
            return R @ np.diag(diag) @ R.T

        out = []

        def check(name, a, b):
            a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
            if a.shape != b.shape:
                out.append("%s: shape %s vs %s" % (name, a.shape, b.shape))
            elif a.size and np.any(np.abs(a - b) > rtol * (1.0 + np.abs(a))):
                k = int(np.argmax(np.abs(a - b)))
                out.append("%s: mujoco %g vs newton %g (flat index %d)" % (name, a.flat[k], b.flat[k], k))

        bm, jm, dm, gm = self._ref_body_map, self._ref_jnt_map, self._ref_dof_map, self._ref_geom_map
        check("body_parent", [bm[p] for p in mj.body_parentid], ref.body_parentid[bm])
        check("body_pos", ref.body_pos[bm], mj.body_pos)
        check("body_quat", ref.body_quat[bm], mj.body_quat)
        check("body_mass", ref.body_mass[bm], world0("body_mass"))
        check("body_ipos", ref.body_ipos[bm], world0("body_ipos"))
        iq, inn = world0("body_iquat"), world0("body_inertia")
        check("body_inertia (full tensor)",
              [inertia(ref.body_inertia[r], ref.body_iquat[r]) for r in bm],
              [inertia(inn[i], iq[i]) for i in range(len(bm))])
        check("body_invweight0", ref.body_invweight0[bm], world0("body_invweight0"))
        for f in ("dof_armature", "dof_damping", "dof_frictionloss", "dof_invweight0"):
            check(f, getattr(ref, f)[dm], world0(f))
        for f in ("jnt_type", "jnt_limited", "jnt_pos", "jnt_axis", "jnt_stiffness", "jnt_solref", "jnt_solimp",
                  "jnt_margin"):
            a = getattr(ref, f)[jm]
            check(f, a, world0(f) if hasattr(m, f) and getattr(m, f).numpy().ndim == a.ndim + 1 else getattr(mj, f))
        limited = ref.jnt_limited[jm].astype(bool)
        check("jnt_range", ref.jnt_range[jm][limited], world0("jnt_range")[limited])
        rg = ref.geom_type[gm]
        nonplane = rg != int(mujoco.mjtGeom.mjGEOM_PLANE)
        check("geom_type", rg, mj.geom_type)
        check("geom_size", ref.geom_size[gm][nonplane], world0("geom_size")[nonplane])
        check("geom_pos", ref.geom_pos[gm][nonplane], world0("geom_pos")[nonplane])
        # the frames of symmetric geoms may differ by a turn about their axis: compare z axes
        def zaxis(q):  # wxyz
            return [2 * (q[1] * q[3] + q[0] * q[2]), 2 * (q[2] * q[3] - q[0] * q[1]), 1 - 2 * (q[1] ** 2 + q[2] ** 2)]

        check("geom_quat (z axis)", [zaxis(q) for q in ref.geom_quat[gm][nonplane]],
              [zaxis(q) for q in world0("geom_quat")[nonplane]])
        for f in ("geom_friction", "geom_margin", "geom_gap", "geom_solref", "geom_solimp", "geom_solmix"):
            check(f, getattr(ref, f)[gm], world0(f))
        for f in ("geom_contype", "geom_conaffinity", "geom_condim", "geom_priority"):
            check(f, getattr(ref, f)[gm], getattr(mj, f))
        for f in ("actuator_trntype", "actuator_dyntype", "actuator_gaintype", "actuator_biastype",
                  "actuator_ctrllimited", "actuator_forcelimited"):
            check(f, getattr(ref, f), getattr(mj, f))
        check("actuator_trnid", [self._mj_jnt_of_ref[j] for j in ref.actuator_trnid[:, 0]], mj.actuator_trnid[:, 0])
        for f in ("actuator_gear", "actuator_ctrlrange", "actuator_gainprm", "actuator_biasprm"):
            check(f, getattr(ref, f), world0(f))
        # (an MJCF <option> that Newton's importer drops shows here: noslip, the o_* overrides, ...)
        for f in ("gravity", "integrator", "solver", "cone", "iterations", "ls_iterations", "tolerance",
                  "ls_tolerance", "impratio", "disableflags", "enableflags", "o_margin", "o_solref",
                  "o_solimp", "o_friction", "noslip_iterations", "noslip_tolerance", "ccd_iterations",
                  "ccd_tolerance", "jacobian", "density", "viscosity", "wind", "magnetic"):
            a = getattr(ref.opt, f)
            b = getattr(m.opt, f, None)
            b = getattr(mj.opt, f) if b is None else (b.numpy()[0] if hasattr(b, "numpy") else b)
            check("opt." + f, a, b)
        check("opt.timestep", ref.opt.timestep, m.opt.timestep.numpy()[0])
        return out

    # -- streams: torch ops run on torch's current stream, Warp's on its own -------------------
    def _torch_stream(self):
        """Torch's current stream on this device as a wp.Stream, made once per torch stream (a
        wp.Stream wrapper per step costs host time on every simulate and set_state)."""
        current = torch.cuda.current_stream(self.device)
        cached = self._torch_stream_cache
        if cached is None or cached[0] != current:
            cached = self._torch_stream_cache = (current, self._wp.stream_from_torch(current))
        return cached[1]

    def _warp_waits_for_torch(self) -> None:
        if self._is_cuda and not self._external_capture:
            self._stream.wait_stream(self._torch_stream())

    def _torch_waits_for_warp(self) -> None:
        if self._is_cuda and not self._external_capture:
            self._torch_stream().wait_stream(self._stream)

    @property
    def graph_capturable(self) -> bool:
        return self._is_cuda

    @contextlib.contextmanager
    def capture_scope(self):
        """Record into the caller's ``torch.cuda.graph``: Warp's kernels go onto torch's
        capturing stream (so no cross-stream waits), the capture is registered with Warp as
        external (so Warp allocates graph-safely), and :meth:`simulate` launches its kernels
        instead of its own graph (a graph launch cannot be recorded into another capture)."""
        if not self._is_cuda:
            raise RuntimeError("the newton engine records CUDA graphs on cuda devices only")
        wp = self._wp
        own = self._stream
        stream = wp.stream_from_torch(torch.cuda.current_stream(self.device))
        wp.capture_begin(device=self.wp_device, stream=stream, force_module_load=False, external=True,
                         capture_mode=wp.CaptureMode.THREAD_LOCAL)  # as the caller captures
        self._stream, self._external_capture = stream, True
        # MuJoCo Warp runs its solver iterations as a graph-conditional loop (wp.capture_while),
        # which ends the stream's capture and begins it again: the stream gets a new capture id,
        # and torch routes a graph's allocations to the graph's private pool by that id, so every
        # torch tensor the step makes after the first solve would come from the general pool and
        # be reused under the replayed graph. Inside torch's capture: the plain loop (all
        # iterations, no early exit on convergence).
        opt = self.solver.mjw_model.opt
        conditional, opt.graph_conditional = opt.graph_conditional, False
        try:
            yield
        except BaseException:
            # the caller's capture failed: end Warp's side of it too, and let the caller see the
            # first error (Warp's "capture failed" at its end would replace it)
            try:
                wp.capture_end(device=self.wp_device, stream=stream)
            except Exception:  # noqa: BLE001 - secondary to the error on its way out
                pass
            raise
        else:
            self._ext_graphs.append(wp.capture_end(device=self.wp_device, stream=stream))
        finally:
            opt.graph_conditional = conditional
            self._stream, self._external_capture = own, False

    def _stream_scope(self):
        # no sync on entry (the default): ordering with torch is explicit (_warp_waits_for_torch),
        # and inside a caller's capture a wait on the previous, uncaptured stream would cross the
        # capture boundary
        return (self._wp.ScopedStream(self._stream, sync_enter=False) if self._is_cuda
                else contextlib.nullcontext())

    def _warm_up(self) -> None:
        """Load every kernel of a step (graph capture cannot compile), leaving the state as it is."""
        wp = self._wp
        self._reset_mask.fill_(True)
        self._warp_waits_for_torch()
        with wp.ScopedDevice(self.wp_device), self._stream_scope():
            self.solver.step(self.state_0, self.state_1, self.control, None, self.dt)  # into state_1 only
            self.solver.reset(self.state_0, world_mask=self._reset_mask_wp, flags=0)  # clears warm-start
            self._gather_overflow()
        wp.synchronize_device(self.wp_device)
        self._reset_mask.fill_(False)
        self._overflow_acc.zero_()  # the warm-up step is no step of the run

    def _gather_overflow(self) -> None:
        """OR the step's overflow bits into the accumulator (the solver clears them per step)."""
        if self._overflow_bits is not None:
            self._wp.launch(self._or_into, dim=self.num_envs,
                            inputs=[self._overflow_acc_wp, self._overflow_bits])

    def _step_loop(self, steps: int) -> None:
        s0, s1 = self.state_0, self.state_1
        wp = self._wp
        for _ in range(steps):
            self.solver.step(s0, s1, self.control, None, self.dt)
            self._gather_overflow()
            # copy back instead of swapping: the torch views and captured graphs keep one address
            wp.copy(s0.joint_q, s1.joint_q)
            wp.copy(s0.joint_qd, s1.joint_qd)
            wp.copy(s0.body_q, s1.body_q)
            wp.copy(s0.body_qd, s1.body_qd)

    # ------------------------------------------------------------------------------------------
    def set_dof_torques(self, torques: torch.Tensor) -> None:
        if self._ctrl is None:
            return
        torch.clamp(torques.to(device=self.device, dtype=torch.float32)[:, self._act_dof] / self._gear,
                    self._ctrl_lo, self._ctrl_hi, out=self._ctrl)

    def simulate(self, steps: int = 1) -> None:
        steps = int(steps)
        if steps <= 0:
            return
        wp = self._wp
        if not self._is_cuda:
            with wp.ScopedDevice(self.wp_device):
                self._step_loop(steps)
            return
        self._warp_waits_for_torch()
        with wp.ScopedDevice(self.wp_device), self._stream_scope():
            if not self._use_graph or self._external_capture:
                self._step_loop(steps)
            else:
                graph = self._graphs.get(steps)
                if graph is None:
                    with wp.ScopedCapture(device=self.wp_device, stream=self._stream) as capture:
                        self._step_loop(steps)
                    graph = self._graphs[steps] = capture.graph
                wp.capture_launch(graph, stream=self._stream)
        self._torch_waits_for_warp()

    def refresh(self) -> None:
        A, E = self.num_actors, self.num_envs
        q = self._jq[:, self._q_cols]                 # one gather each: pos | quat, then dofs
        qd = self._jqd[:, self._qd_cols]              # lin (COM) | ang, then dofs
        rs = self.root_states
        rs[..., 0:7].copy_(q[:, :7 * A].view(E, A, 7))
        vel = qd[:, :6 * A].view(E, A, 6)
        if not self._com_is_origin:  # COM velocity -> body-origin velocity
            lin, ang = vel[..., 0:3], vel[..., 3:6]
            com = quat_rotate(rs[..., 3:7], self._com.expand_as(lin))
            vel = torch.cat([lin - torch.cross(ang, com, dim=-1), ang], -1)
        rs[..., 7:13].copy_(vel)
        torch.add(q[:, 7 * A:], self._dof_ref, out=self.dof_pos)
        self.dof_vel.copy_(qd[:, 6 * A:])

    def healthy(self) -> torch.Tensor:
        # MuJoCo's bound (mjMAXVAL): C MuJoCo resets a world past it, MuJoCo Warp goes on; NaN fails too
        return (self._jq.abs() < 1e10).all(1) & (self._jqd.abs() < 1e10).all(1)

    def _rows(self, rows, root_states=None, dof_pos=None, dof_vel=None) -> torch.Tensor:
        """``rows`` [n, joint_q | joint_qd] (float32, owned) with the given parts written in."""
        q, qd = rows[:, :self._jq.shape[1]], rows[:, self._jq.shape[1]:]
        if root_states is not None:
            rs = root_states.to(device=self.device, dtype=torch.float32)
            quat = rs[..., 3:7]
            ang = rs[..., 10:13]
            lin = rs[..., 7:10]
            if not self._com_is_origin:  # body-origin velocity -> COM velocity
                lin = lin + torch.cross(ang, quat_rotate(quat, self._com.expand_as(lin)), dim=-1)
            q[:, self._pos_idx] = rs[..., 0:3]
            q[:, self._quat_idx] = quat
            qd[:, self._lin_idx] = lin
            qd[:, self._ang_idx] = ang
        if dof_pos is not None:
            q[:, self._dof_q] = dof_pos.to(device=self.device, dtype=torch.float32) - self._dof_ref
        if dof_vel is not None:
            qd[:, self._dof_v] = dof_vel.to(device=self.device, dtype=torch.float32)
        return rows

    def encode_state(self, root_states, dof_pos, dof_vel) -> torch.Tensor:
        """Rows of joint_q | joint_qd [n, coords + dofs per world] float32 (joints the scene does
        not name keep the model's initial values)."""
        return self._rows(self._q_qd0.repeat(root_states.shape[0], 1), root_states, dof_pos, dof_vel)

    def set_state(self, mask, root_states=None, dof_pos=None, dof_vel=None) -> None:
        self.set_encoded_state(mask, self._rows(torch.cat([self._jq, self._jqd], 1), root_states,
                                                dof_pos, dof_vel))

    def set_encoded_state(self, mask, encoded) -> None:
        mask = mask.to(device=self.device, dtype=torch.bool)
        m = mask.view(-1, 1)
        nq = self._jq.shape[1]
        torch.where(m, encoded[:, :nq], self._jq, out=self._jq)
        torch.where(m, encoded[:, nq:], self._jqd, out=self._jqd)
        # MuJoCo's qpos/qvel are re-read from joint_q/qd at every step; what persists inside the
        # solver (acceleration warm-start, applied forces) is cleared in the reset worlds only.
        self._reset_mask[:-1].copy_(mask)
        wp = self._wp
        self._warp_waits_for_torch()
        with wp.ScopedDevice(self.wp_device), self._stream_scope():
            self.solver.reset(self.state_0, world_mask=self._reset_mask_wp, flags=0)
            self._newton.eval_fk(self.model, self.state_0.joint_q, self.state_0.joint_qd, self.state_0)
        self._torch_waits_for_warp()

    # MuJoCo Warp's per-world overflow bits (mjw.OverflowType) of the buffers nconmax / njmax
    # size: NEFC, NJMAX_NNZ (constraint rows), BROADPHASE, NARROWPHASE, CCD (contacts: Newton
    # leaves naccdmax at MuJoCo Warp's default, naconmax). Not EPA_HORIZON, ... (other fixed
    # buffers) nor ITERATIONS / LS_ITERATIONS (a solve stopped at its iteration limit)
    BUFFER_OVERFLOW_BITS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4)

    def diagnostics(self) -> Dict[str, torch.Tensor]:
        """``overflow_worlds``: worlds whose contacts or constraint rows overflowed the fixed
        buffers (``sim.newton.nconmax`` / ``njmax``) in any physics step since the last call;
        the physics of those worlds dropped contacts. Contacts share one pool of ``nconmax *
        num_envs``: when it overflows, every world is flagged. Device ops, ordered before the
        next step; reading the count syncs."""
        if self._overflow_bits is None:
            return {}
        acc = self._overflow_acc
        worlds = ((acc & self.BUFFER_OVERFLOW_BITS) != 0).sum()
        acc.zero_()
        return {"overflow_worlds": worlds}

    def buffer_sizes(self) -> Dict[str, int]:
        """Per-world contact and constraint-row capacities (``nconmax``, ``njmax``), as MuJoCo
        Warp sized them (it may round a requested size up); contacts share one pool of
        ``nconmax * num_envs``."""
        d = self.solver.mjw_data
        return {"nconmax": int(d.naconmax) // self.num_envs, "njmax": int(d.njmax)}

    def contact_stats(self) -> Dict[str, int]:
        """Host-side check of the solver's fixed buffers after the last step (syncs; for tests).

        ``nacon``: contacts in all worlds, ``nefc_max``: most constraint rows in one world,
        ``overflow``: OR of MuJoCo Warp's per-world overflow bits (0 when nothing was dropped).
        """
        d = self.solver.mjw_data
        overflow = getattr(d, "overflow", None)
        return {
            "nacon": int(d.nacon.numpy().sum()),
            "naconmax": int(d.naconmax),
            "nefc_max": int(d.nefc.numpy().max()),
            "njmax": int(d.njmax),
            "overflow": int(np.bitwise_or.reduce(overflow.numpy().ravel())) if overflow is not None else 0,
        }

    def close(self) -> None:
        self._graphs.clear()
        self._ext_graphs.clear()

