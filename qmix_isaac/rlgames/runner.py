"""Train and play rl-games PPO / MAPPO through train.py, with QMIX's run folder and checkpoints.

``train.py``'s ``build`` makes an :class:`RLGamesRunner` when the train config names an rl-games
algorithm; it has what train.py's evaluation, viewer and video code use of a QMIX runner (``env``,
``agent`` acting greedily, ``load_state_dict``), and :meth:`RLGamesRunner.learn` trains through
``rl_games.torch_runner.Runner`` in the run folder train.py makes:

    runs/<experiment>_<date>/config.yaml, nn/last.pth, nn/best.pth, summaries/, curves.png

Checkpoints are ours (``qmix_isaac.record.checkpoint``: atomic, ``weights_only``-loadable), with
``learner: rl_games`` and rl-games' full training state (model with its running input / value
statistics, optimiser, central value net, epoch, frame) under ``runner.rl_games``; a run resumes
from one (``checkpoint=...``), epochs counting on, as QMIX's iterations do. rl-games' own
checkpoint files are not written: they pickle numpy scalars and need ``weights_only=False``.

One train.py iteration is one rl-games epoch: ``horizon_length`` steps of every world, then
``mini_epochs`` passes of PPO over them; ``max_iterations`` is rl-games' ``max_epochs``.
"""
from __future__ import annotations

import copy
import math
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from rl_games.algos_torch import a2c_discrete, model_builder
from rl_games.torch_runner import Runner

from qmix_isaac.record.checkpoint import (restore_task_state, rng_state, save_checkpoint,
                                          set_rng_state, task_shapes)

from . import describe_learner
from .observer import EpisodeObserver
from .vecenv import ENV_NAME, RLGamesVecEnv, flat_agent_obs, register_env

__all__ = ["RLGamesRunner", "GreedyPolicy", "TrainConfigError", "rlgames_params", "CURVE_PANELS"]

DEFAULT_LOG_INTERVAL = 100_000      # env steps between log lines / checkpoints (train config: log_interval)
MODELS = {"discrete_a2c": "discrete", "multi_discrete_a2c": "multi_discrete"}
REQUIRED = ("horizon_length", "mini_epochs", "learning_rate", "gamma", "tau", "e_clip",
            "entropy_coef", "critic_coef", "clip_value", "grad_norm", "truncate_grads",
            "normalize_input", "normalize_advantage", "lr_schedule", "reward_shaper")
CURVE_PANELS = (("charts/episode_return", "episode return"), ("charts/success_rate", "success rate"),
                ("losses/entropy", "policy entropy"), ("losses/critic_loss", "value loss"))
# MAPPO: the critic is the central value (the actor-critic's own value head is not trained)
CURVE_PANELS_MAPPO = CURVE_PANELS[:3] + (("losses/central_value_loss", "central value loss"),)
# what rl-games' Runner() turns on for speed; put back after it, so that torch_deterministic=True
# and the task's own float32 maths stay as train.py set them (test=True builds no Runner)
_TORCH_FLAGS = (("backends.cuda.matmul", "allow_tf32"), ("backends.cudnn", "allow_tf32"),
                ("backends.cudnn", "benchmark"))


class TrainConfigError(ValueError):
    """An rl-games train config that cannot run on this task (one line)."""


# --------------------------------------------------------------------------------------------
# the train config
# --------------------------------------------------------------------------------------------
def rlgames_params(train_cfg: Mapping[str, Any], env) -> Dict[str, Any]:
    """A checked deep copy of the config's ``params`` (rl-games' layout)."""
    params = copy.deepcopy(dict(train_cfg.get("params") or {}))
    algo = (params.get("algo") or {}).get("name")
    if algo != "a2c_discrete":
        raise TrainConfigError("params.algo.name must be a2c_discrete (rl-games' discrete PPO), not %r"
                               % algo)
    for section in ("model", "network", "config"):
        if not isinstance(params.get(section), Mapping):
            raise TrainConfigError("params.%s is missing" % section)
    config = params["config"]
    missing = [k for k in REQUIRED if k not in config]
    if "minibatch_size" not in config and "minibatch_size_per_env" not in config:
        missing.append("minibatch_size (or minibatch_size_per_env)")
    if missing:
        raise TrainConfigError("params.config lacks %s" % ", ".join(missing))
    if config.get("torch_compile", False) is not False:  # weights named _orig_mod.*: unloadable
        raise TrainConfigError("params.config.torch_compile must be false: a compiled model's "
                               "checkpoints do not load back here")
    network = params["network"]
    if "rnn" in network or "cnn" in network:
        raise TrainConfigError("params.network: only mlp actor-critics are wired up (no rnn / cnn)")
    if "mlp" not in network:
        raise TrainConfigError("params.network.mlp is missing")
    factored = bool(getattr(env, "action_branches", None))
    want = "multi_discrete_a2c" if factored else "discrete_a2c"
    model = params["model"].get("name")
    space = list((network.get("space") or {}).keys())
    if model != want or space != [MODELS[want]]:
        kind = ("factored actions (%d branches)" % len(env.action_branches) if factored
                else "flat actions (%d)" % int(env.num_actions))
        raise TrainConfigError("the task has %s: use params.model.name=%s with params.network.space.%s "
                               "(got model %s, space %s)" % (kind, want, MODELS[want], model,
                                                             "/".join(space) or "none"))
    for key in ("max_frames", "max_steps"):  # rl-games counts them in agent-steps
        if key in config:
            raise TrainConfigError("params.config.%s: a run stops at max_iterations (rl-games "
                                   "epochs) here; set max_iterations= instead" % key)
    if factored and config.get("use_action_masks", True) and len(set(env.action_branches)) > 1:
        raise TrainConfigError("rl-games splits action masks into equal parts per branch: "
                               "use_action_masks needs branches of equal size, not %s"
                               % (tuple(env.action_branches),))
    cv = config.get("central_value_config")
    if cv is not None:
        for key in ("network", "learning_rate", "mini_epochs", "normalize_input", "clip_value"):
            if key not in cv:
                raise TrainConfigError("params.config.central_value_config lacks %s" % key)
        if "rnn" in cv["network"]:
            raise TrainConfigError("central_value_config.network: only mlp (no rnn)")
    return params


def check_batches(params: Mapping[str, Any], env) -> None:
    """The batch sizes rl-games divides into minibatches (training only; checked before a run
    folder exists)."""
    config = params["config"]
    cv = config.get("central_value_config")
    E, A, T = int(env.num_envs), int(env.num_agents), int(config["horizon_length"])
    for where, section, batch in (("params.config", config, T * E * A),
                                  ("params.config.central_value_config", cv, T * E)):
        if section is None:
            continue
        mb = int(section.get("minibatch_size", E * int(section.get("minibatch_size_per_env", 0))))
        if mb <= 0 or batch % mb:
            raise TrainConfigError("%s: the batch of %d (horizon_length %d x %d envs%s) is not a "
                                   "multiple of the minibatch of %d" % (
                                       where, batch, T, E, " x %d agents" % A if section is config
                                       else "", mb))


def build_model(params: Mapping[str, Any], vec_env: RLGamesVecEnv) -> torch.nn.Module:
    """The actor-critic rl-games' DiscreteA2CAgent builds from the same params and env."""
    config = params["config"]
    network = model_builder.ModelBuilder().load(params)
    space = vec_env.action_space
    actions = [s.n for s in space] if vec_env.branches is not None else space.n
    return network.build({"actions_num": actions, "input_shape": vec_env.observation_space.shape,
                          "num_seqs": vec_env.num_envs * vec_env.num_agents, "value_size": 1,
                          "normalize_value": bool(config.get("normalize_value", False)),
                          "normalize_input": bool(config["normalize_input"])})


# --------------------------------------------------------------------------------------------
# acting greedily (evaluation, videos, the viewer)
# --------------------------------------------------------------------------------------------
class GreedyPolicy:
    """An rl-games actor playing its most likely actions, called like QMIX's ``RNNAgent``
    (``agent(obs, prev_actions, start, hidden) -> (scores, hidden)``, scores float[E, A,
    n_branches, max_bins]) so that ``qmix_isaac.runner.evaluate`` / ``GreedyTeam``, the viewer and
    the video recorder play it as they play a QMIX team. Its scores are the policy's logits; the
    argmax over available actions is rl-games' deterministic action.

    ``deterministic=False`` (rl-games' ``player.deterministic``) adds Gumbel noise to the logits:
    the argmax over available actions is then a draw from the policy's categorical, renormalised
    over those actions (the Gumbel-max trick), from the policy's own generator (``seed``)."""

    def __init__(self, model: torch.nn.Module, num_agents: int, branches: Optional[Sequence[int]],
                 obs_agent_id: bool, device, deterministic: bool = True, seed: int = 0) -> None:
        self.model = model
        self.num_agents = int(num_agents)
        self.branches = tuple(branches) if branches else None
        self.obs_agent_id = obs_agent_id
        self.agent_ids = torch.arange(self.num_agents, device=device)
        self.deterministic = bool(deterministic)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))

    def init_hidden(self, batch: int):
        return None  # feed-forward

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, prev_actions=None, start=None, hidden=None):
        E, A = obs.shape[0], self.num_agents
        ids = torch.eye(A, device=obs.device).repeat(E, 1) if self.obs_agent_id else None
        x = flat_agent_obs(obs, ids).to(torch.float32)
        was_training = self.model.training
        self.model.eval()  # no running-statistics updates from evaluation
        try:
            # the actor's logits, as the model computes them before it samples: no draw from
            # torch's random stream, so evaluating does not change how training goes on
            logits = self.model.a2c_network({"obs": self.model.norm_obs(x), "rnn_states": None})[0]
        finally:
            self.model.train(was_training)
        if self.branches is None:
            scores = logits.view(E, A, 1, -1)
        else:
            width = max(self.branches)
            low = torch.finfo(logits[0].dtype).min
            scores = torch.stack([torch.nn.functional.pad(l, (0, width - l.shape[-1]), value=low)
                                  for l in logits], -2).view(E, A, len(self.branches), width)
        if not self.deterministic:
            scores = gumbel_perturbed(scores, self.generator)
        return scores, None


def gumbel_perturbed(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``logits`` plus independent Gumbel(0, 1) noise: the argmax over any subset of the last
    dimension is a draw from softmax(logits) restricted to that subset (the Gumbel-max trick)."""
    u = torch.rand(logits.shape, device=logits.device, generator=generator).clamp_min(1e-20)
    return logits - torch.log(-torch.log(u))


# --------------------------------------------------------------------------------------------
# rl-games' agent, as we run it
# --------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """numpy scalars / arrays -> Python numbers / tensors, recursively: checkpoints must load with
    ``torch.load(weights_only=True)`` (rl-games keeps e.g. ``last_mean_rewards`` as numpy)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _make_agent_class():
    class QmixIsaacA2CAgent(a2c_discrete.DiscreteA2CAgent):
        """rl-games' discrete PPO agent (what it learns is unchanged), with two differences:
        ``save`` writes nothing (the observer writes our checkpoints), and the action masks stay
        on their device (rl-games 1.6.5 wraps them in ``torch.BoolTensor(...)``, a CPU-only legacy
        constructor that refuses CUDA tensors)."""

        def __init__(self, base_name, params, resume=None, rng=None):
            super().__init__(base_name, params)
            if resume is not None:
                try:
                    self.set_full_state_weights(resume)
                except (RuntimeError, KeyError, ValueError) as exc:  # e.g. the central value's size
                    from qmix_isaac.record.checkpoint import CheckpointError
                    detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
                    raise CheckpointError("the checkpoint's training state does not fit this train "
                                          "config (%s)" % detail[:240])
                self.algo_observer.resumed(self)
            if rng is not None:
                set_rng_state(rng)

        def save(self, fn):  # rl-games' checkpoints (best reward / max epochs): ours instead
            pass

        def get_full_state_weights(self):
            state = super().get_full_state_weights()
            # the adaptive schedule's current rate, which rl-games leaves out (a resume restarted
            # from the configured one), and that configured rate
            state["last_lr"] = float(self.last_lr)
            state["config_lr"] = float(self.config["learning_rate"])
            return state

        def set_full_state_weights(self, weights, set_epoch=True):
            super().set_full_state_weights(weights, set_epoch)
            if weights.get("config_lr") == float(self.config["learning_rate"]):  # not overridden
                self.last_lr = float(weights["last_lr"])

        def get_masked_action_values(self, obs, action_masks):
            masks = action_masks.to(self.ppo_device, torch.bool)
            input_dict = {"is_train": False, "prev_actions": None, "action_masks": masks,
                          "obs": self._preproc_obs(obs["obs"]), "rnn_states": self.rnn_states}
            with torch.no_grad():
                res = self.model(input_dict)
                if self.has_central_value:
                    res["values"] = self.get_central_value({"is_train": False,
                                                            "states": obs["states"]})
            res["action_masks"] = masks
            return res

    return QmixIsaacA2CAgent


# --------------------------------------------------------------------------------------------
# the runner train.py holds
# --------------------------------------------------------------------------------------------
class RLGamesRunner:
    """What ``train.py`` builds for an rl-games train config (see the module docstring)."""

    trains_itself = True  # train.py: call learn() instead of its QMIX collect-and-train loop

    def __init__(self, train_cfg: Mapping[str, Any], env) -> None:
        self.env = env
        self.train_cfg = train_cfg
        self.params = rlgames_params(train_cfg, env)
        self.env_config = dict(self.params["config"].get("env_config") or {})
        unknown = set(self.env_config) - {"obs_agent_id", "seed"}
        if unknown:
            raise TrainConfigError("params.config.env_config: unknown keys %s (known: obs_agent_id)"
                                   % sorted(unknown))
        self.vec_env = RLGamesVecEnv(env, **self.env_config)
        self.algo_name = describe_learner(train_cfg)
        try:
            self.model = build_model(self.params, self.vec_env).to(env.rl_device)
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainConfigError("params.network: %s: %s" % (type(exc).__name__, exc))
        player = self.params["config"].get("player") or {}
        self.agent = GreedyPolicy(self.model, env.num_agents, self.vec_env.branches,
                                  self.vec_env.obs_agent_id, env.rl_device,
                                  deterministic=bool(player.get("deterministic", True)),
                                  seed=torch.initial_seed())  # train.py's seed= (set_seed)
        self._resume: Optional[Dict[str, Any]] = None
        self.env_steps = 0

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """A checkpoint's ``runner`` entry: the weights act at once; the rest resumes training."""
        from qmix_isaac.record.checkpoint import CheckpointError

        weights = state["rl_games"]
        try:
            self.model.load_state_dict(weights["model"])
        except RuntimeError as exc:  # e.g. train.params.network.* changed since it was written
            detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
            raise CheckpointError("the checkpoint's weights do not fit this train config's network "
                                  "(%s)" % detail[:240])
        self._resume = dict(weights)
        self.env_steps = int(state.get("env_steps", 0))

    # ---- training -----------------------------------------------------------------------------
    def _run_params(self, seed: int, run_dir: str, max_epochs: int) -> Dict[str, Any]:
        params = copy.deepcopy(self.params)
        params["seed"] = int(seed)
        # rl-games sets torch to min(4, cores) threads unless told 0 ("leave as is"): the MuJoCo
        # engine has chosen one torch thread beside its physics pool (BENCHMARKS.md)
        params.setdefault("torch_threads", 0)
        config = params["config"]
        config.update({
            "env_name": ENV_NAME, "num_actors": int(self.env.num_envs),
            "device": str(self.env.rl_device), "max_epochs": int(max_epochs),
            "train_dir": os.path.dirname(os.path.abspath(run_dir)),
            "full_experiment_name": os.path.basename(run_dir),
            "save_frequency": 0, "multi_gpu": False,
            # rl-games' "best rewards" checkpoints (and their print) are off: ours track success
            "save_best_after": 2 ** 62,
        })
        # rl-games 1.6.5 wraps the model in torch.compile unless told not to: slow to start and
        # needs a C++ toolchain on the CPU
        config.setdefault("torch_compile", False)
        config.setdefault("use_action_masks", True)
        config.setdefault("print_stats", False)
        config["env_config"] = dict(self.env_config)
        return params

    def run(self, observer: EpisodeObserver, *, run_dir: str, max_epochs: int, seed: int,
            resume: Optional[Mapping[str, Any]] = None, rng: Optional[Mapping[str, Any]] = None):
        """Train through ``rl_games.torch_runner.Runner`` until ``max_epochs`` (or Ctrl-C), with
        ``observer`` seeing every step and epoch; rl-games' folders go to ``run_dir``. Returns
        rl-games' agent. ``resume``: a checkpoint's rl-games state to continue from."""
        register_env(lambda: self.env)
        agent_class = _make_agent_class()
        errors: List[str] = []

        def make_agent(**kwargs):
            try:
                return agent_class(resume=resume, rng=rng, **kwargs)
            except (KeyError, TypeError, ValueError) as exc:  # a config rl-games refuses
                errors.append("%s: %s" % (type(exc).__name__, (str(exc).strip().splitlines()
                                                                or [repr(exc)])[0]))
                raise

        saved = [(getattr(_attr(torch, mod), name)) for mod, name in _TORCH_FLAGS]
        precision = torch.get_float32_matmul_precision()
        rl_runner = Runner(algo_observer=observer)
        for (mod, name), value in zip(_TORCH_FLAGS, saved):
            setattr(_attr(torch, mod), name, value)
        torch.set_float32_matmul_precision(precision)
        rl_runner.algo_factory.register_builder("a2c_discrete", make_agent)
        params = self._run_params(seed, os.path.abspath(run_dir), max_epochs)
        try:
            rl_runner.load({"params": params})
            rl_runner.run({"train": True, "play": False, "checkpoint": None, "sigma": None})
        except KeyboardInterrupt:
            print("[qmix-isaac] interrupted: saving nn/last.pth", flush=True)
            algo = observer.algo
            if algo is not None:  # rl-games counts an epoch when it starts it and its frames
                # when it ends, before the observer hears of it: one cut short counts as not run
                algo.epoch_num = min(int(algo.epoch_num), observer.epoch)
                algo.frame = min(int(algo.frame), observer.env_steps * int(algo.num_agents))
        except Exception:
            if observer.algo is None and errors:
                raise TrainConfigError(errors[0])
            raise
        if observer.algo is None:
            raise TrainConfigError("rl-games did not start training")
        self.model = observer.algo.model  # the trained weights act from now on
        self.agent.model = self.model
        return observer.algo

    def learn(self, cfg, ckpt: Optional[Mapping[str, Any]], task_cfg: Dict[str, Any],
              train_cfg: Dict[str, Any], *, usage_error: Callable[[str], Exception]) -> None:
        """Train in a new run folder (``record.run.start_run``: local, or staged for object
        storage), as train.py's QMIX loop does; bad input raises ``usage_error(one line)``."""
        from qmix_isaac.record.checkpoint import CheckpointError
        from qmix_isaac.record.curves import plot_curves
        from qmix_isaac.record.run import RunSetupError, engine_health, start_run
        from qmix_isaac.record.storage import StorageError

        iteration, history, best = 0, None, -math.inf
        if ckpt is not None:
            self.load_state_dict(ckpt["runner"])
            iteration, history = int(ckpt["iteration"]), ckpt.get("history")
            best = float(ckpt.get("best_score", -math.inf))
            restore_task_state(self.env, ckpt, print)
        default_its = train_cfg.get("max_iterations", 1000)
        max_it = int(cfg.max_iterations) if cfg.max_iterations not in ("", None) else int(default_its)
        if iteration >= max_it:
            raise usage_error("the checkpoint already ran %d iterations; max_iterations=%d counts from "
                              "the start of the run: give a larger one to continue" % (iteration, max_it))
        log_interval = int(train_cfg.get("log_interval", DEFAULT_LOG_INTERVAL))
        try:
            check_batches(self.params, self.env)
        except TrainConfigError as exc:
            raise usage_error("train config: %s" % exc)
        try:
            run, logger = start_run(cfg, task_cfg, train_cfg, ckpt, history)
        except RunSetupError as exc:
            raise usage_error(str(exc))
        print("[qmix-isaac] run folder %s (%s, from iteration %d of %d)"
              % (run.target, self.algo_name, iteration, max_it), flush=True)
        if ckpt is not None:
            print("[qmix-isaac] resumed at iteration %d: %d env steps" % (iteration, self.env_steps),
                  flush=True)
        if cfg.capture_video:
            print("[qmix-isaac] capture_video while training is QMIX-only for now; record an "
                  "rl-games policy with test=True capture_video=True", flush=True)

        def save(algo, name: str, score: float, final: bool = False) -> None:
            state = _plain(algo.get_full_state_weights())
            save_checkpoint(run.path("nn", name), {
                "task": task_cfg["name"], "task_cfg": task_cfg, "train_cfg": train_cfg,
                "learner": "rl_games", "algo": self.algo_name,
                "shapes": task_shapes(self.env),
                "runner": {"rl_games": state, "env_steps": int(algo.frame) // int(algo.num_agents)},
                "iteration": int(algo.epoch_num), "rng": rng_state(), "task_state": self.env.state_dict(),
                "history": {k: [list(p) for p in v] for k, v in logger.history.items()},
                "best_score": score})
            if name == "last.pth" and not final:  # after best.pth at each log: one upload for
                run.try_sync()                      # both (a failure warns; run.close() at the end)

        warned = [False]

        def health(stats: Dict[str, float]) -> None:
            warned[0] = engine_health(self.env, stats, print, warned[0])

        observer = EpisodeObserver(logger, log_interval=log_interval, max_epochs=max_it, save=save,
                                   best=best, summaries_dir=run.path("summaries"), health=health,
                                   has_best=lambda: os.path.isfile(run.path("nn", "best.pth")))
        t0 = time.perf_counter()
        try:
            algo = self.run(observer, run_dir=run.local, max_epochs=max_it, seed=int(cfg.seed),
                            resume=self._resume if ckpt is not None else None,
                            rng=ckpt["rng"] if ckpt is not None else None)
        except TrainConfigError as exc:  # rl-games refused the config: no run to keep
            logger.close()
            run.discard()
            raise usage_error("train config (rl-games): %s" % exc)
        except CheckpointError as exc:  # its training state does not fit: no run to keep
            logger.close()
            run.discard()
            raise usage_error(str(exc))
        wall = time.perf_counter() - t0
        self.env_steps = observer.env_steps
        try:
            save(algo, "last.pth", observer.best, final=True)  # uploaded by run.close()
            if not os.path.isfile(run.path("nn", "best.pth")):
                save(algo, "best.pth", observer.best)  # nothing scored: the last weights are the best
            png = plot_curves(logger.history, run.path("curves.png"),
                              title="%s, %s" % (task_cfg["name"], self.algo_name),
                              panels=CURVE_PANELS_MAPPO if "MAPPO" in self.algo_name else CURVE_PANELS)
            logger.close()
            run.close()
        except StorageError as exc:
            raise usage_error("uploading the run failed (%s); its files are kept in %s" % (exc, run.local))
        print("[qmix-isaac] done: %d iterations, %s env steps in %.0f s; best %s; curves %s"
              % (int(algo.epoch_num), "{:,}".format(observer.env_steps), wall,
                 "%.3f" % observer.best if observer.best > -math.inf else "-",
                 run.url("curves.png") if png else "-"), flush=True)
