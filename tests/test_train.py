"""train.py end to end on CPU (issue 4): real MuJoCo engine, ``python train.py ...`` subprocesses.

Covers: the run folder (config.yaml, nn/last.pth + nn/best.pth, TensorBoard summaries/, curves.png),
resume (counters and curve history continue, max_iterations counts from the start of the run,
task taken from the checkpoint, foreign / other-shape checkpoints refused), test=True evaluation
at any num_envs, headless MP4s (training and test mode), wandb offline, one-line errors that
leave no run folder, and the viewer: headless fallback without a display, and on Xvfb (skipped
when Xvfb is not installed) a screenshot that shows the team, box and goal, ESC and V.

System packages (Debian): libosmesa6 (offscreen MP4s on CPU); for the viewer test xvfb, libgl1,
libglx-mesa0 (GLX for the GLFW window) and libxtst6 (key presses; without it ESC/V are not tested).
QMIX_TEST_ARTIFACTS=<folder> keeps the viewer screenshot (viewer_xvfb.png) and one MP4 frame
(video_frame.png) there, e.g. QMIX_TEST_ARTIFACTS=bench/results.
"""
import ctypes
import glob
import os
import random
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import qmix_isaac  # noqa: E402
from qmix_isaac.record.checkpoint import load_checkpoint  # noqa: E402

# small and fast: 8 worlds, learning from the first iteration, a log line every iteration
SMALL = ["task=MultiBallPush", "num_envs=8", "train.params.runner.learning_starts=0",
         "train.params.runner.log_interval=100", "train.params.runner.replay_ratio=0.01",
         "train.params.runner.batch_size=8"]
RUN_NAME = re.compile(r"^MultiBallPush_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(_\d+)?$")
EVAL = re.compile(r"eval MultiBallPush: (\d+) episodes \| success rate ([-\d.]+) \| return ([-\d.]+) "
                  r"\| final box-goal distance ([-\d.]+) m")


def _env(**extra):
    env = dict(os.environ)
    for key in ("DISPLAY", "WANDB_MODE", "MUJOCO_GL", "PYOPENGL_PLATFORM"):
        env.pop(key, None)  # train.py picks the GL backend itself; no display unless given
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def train_py(args, *, timeout=300, **env):
    """Run ``python train.py args`` from the checkout's root; CompletedProcess (text)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + list(args), cwd=ROOT,
                          env=_env(**env), capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, "exit %d\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def run_dirs(train_dir):
    return sorted(glob.glob(os.path.join(str(train_dir), "*", ""))) if os.path.isdir(str(train_dir)) else []


def only_run_dir(train_dir):
    dirs = run_dirs(train_dir)
    assert len(dirs) == 1, dirs
    return dirs[0].rstrip("/")


def read_mp4(path):
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(path)
    w, h = next(gen)["size"]
    return [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]


def colours(rgb):
    """Pixel counts of the scene's colours: yellow box, blue robots, green goal disc."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return {"box": int(((r > 180) & (g > 180) & (b < 120)).sum()),
            "robots": int(((b > 180) & (r < 100)).sum()),
            "goal": int(((g > 150) & (r < 100) & (b < 120)).sum())}


def keep_artifact(name, rgb):
    folder = os.environ.get("QMIX_TEST_ARTIFACTS")
    if folder:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        os.makedirs(folder, exist_ok=True)
        plt.imsave(os.path.join(folder, name), np.ascontiguousarray(rgb))


# --------------------------------------------------------------------------------------------
# one short training run and its resumption, shared by the tests
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    train_dir = tmp_path_factory.mktemp("runs")
    out = ok(train_py(SMALL + ["max_iterations=3", "train_dir=%s" % train_dir]))
    return {"dir": only_run_dir(train_dir), "stdout": out}


@pytest.fixture(scope="module")
def ckpt_path(first_run):
    return os.path.join(first_run["dir"], "nn", "last.pth")


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, ckpt_path):
    train_dir = tmp_path_factory.mktemp("resumed")
    # no task=: the task (and its configs) come from the checkpoint
    out = ok(train_py(["checkpoint=%s" % ckpt_path, "max_iterations=5", "train_dir=%s" % train_dir]))
    return {"dir": only_run_dir(train_dir), "stdout": out}


def test_run_folder(first_run):
    run = first_run["dir"]
    assert RUN_NAME.match(os.path.basename(run)), run
    with open(os.path.join(run, "config.yaml")) as f:
        text = f.read()
    assert "${" not in text  # resolved
    cfg = yaml.safe_load(text)
    assert cfg["task"]["name"] == "MultiBallPush" and cfg["task_name"] == "MultiBallPush"
    assert cfg["num_envs"] == 8 and cfg["max_iterations"] == 3
    assert cfg["train"]["params"]["runner"]["learning_starts"] == 0
    for name in ("last.pth", "best.pth"):
        ckpt = load_checkpoint(os.path.join(run, "nn", name))
        assert ckpt["task"] == "MultiBallPush" and ckpt["shapes"]["num_agents"] == 2
    assert load_checkpoint(os.path.join(run, "nn", "last.pth"))["iteration"] == 3
    events = glob.glob(os.path.join(run, "summaries", "events.out.tfevents.*"))
    assert events and os.path.getsize(events[0]) > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(run, "summaries"))
    acc.Reload()
    assert len(acc.Scalars("charts/env_steps")) == 3 and acc.Scalars("losses/td_loss")
    with open(os.path.join(run, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "[it 3/3]" in first_run["stdout"] and "done: 3 iterations" in first_run["stdout"]


def test_best_checkpoint_holds_the_weights_of_the_best_logged_score(tmp_path):
    """nn/best.pth is written when the logged success rate beats the best so far, and only then:
    its score is the history's maximum and its weights those of the first log that reached it.
    (A success radius of 1.5 m around goals 1-2 m away: about half the episodes start solved,
    so the rate differs from log to log.)"""
    out = ok(train_py(SMALL + ["max_iterations=8", "task.task.successRadius=1.5",
                               "task.env.episodeLength=10", "train_dir=%s" % tmp_path]))
    nn = os.path.join(only_run_dir(tmp_path), "nn")
    last, best = load_checkpoint(os.path.join(nn, "last.pth")), load_checkpoint(os.path.join(nn, "best.pth"))
    points = last["history"]["charts/success_rate"]            # [env steps, rate] per log
    rates = [r for _, r in points]
    assert len(rates) == 8 and len(set(rates)) > 2, rates      # it varies: the test can tell
    first_best = rates.index(max(rates))
    assert best["best_score"] == last["best_score"] == max(rates)
    assert best["iteration"] == first_best + 1 and best["runner"]["env_steps"] == points[first_best][0]
    assert "best %.3f" % max(rates) in out


def test_resume_continues_counters(first_run, resumed_run, ckpt_path):
    before = load_checkpoint(ckpt_path)
    after = load_checkpoint(os.path.join(resumed_run["dir"], "nn", "last.pth"))
    steps0, steps1 = before["runner"]["env_steps"], after["runner"]["env_steps"]
    grads0 = before["runner"]["learner"]["grad_steps"]
    grads1 = after["runner"]["learner"]["grad_steps"]
    # max_iterations counts from the start of the run: 3 done, 2 more to 5
    assert (before["iteration"], after["iteration"]) == (3, 5)
    assert steps0 > 0 and grads0 > 0
    assert steps0 + 2 * 8 * 32 <= steps1 < steps0 + 3 * 8 * 32  # two iterations of 8 worlds x 32 steps
    assert grads1 > grads0
    for key, points in before["history"].items():  # the learning curves go on from where they were
        assert after["history"][key][:len(points)] == points
    assert len(after["history"]["charts/env_steps"]) == 5
    out = resumed_run["stdout"]
    assert "task MultiBallPush" in out  # no task= given: the checkpoint's (the default is MultiAntPush)
    assert "resumed at iteration 3: %d env steps, %d gradient steps" % (steps0, grads0) in out
    its = re.findall(r"\[it (\d+)/(\d+)\] env steps ([\d,]+)", out)
    assert [(int(i), int(n)) for i, n, _ in its] == [(4, 5), (5, 5)]
    assert int(its[0][2].replace(",", "")) > steps0
    assert "done: 5 iterations, {:,} env steps, {} gradient steps".format(steps1, grads1) in out
    assert (before["total_env_steps"], after["total_env_steps"]) == (steps0, steps1)  # one rank
    assert after["train_name"] == before["train_name"] == "MultiBallPushQMIX"
    with open(os.path.join(resumed_run["dir"], "config.yaml")) as f:
        assert yaml.safe_load(f)["task"]["name"] == "MultiBallPush"
    assert os.path.isfile(os.path.join(resumed_run["dir"], "nn", "best.pth"))


def test_resume_restores_the_task_generator(resumed_run, ckpt_path, tmp_path):
    """The resumed task draws from the checkpoint's generator, not from the command line's seed:
    resumed with another seed (the learner's random state is the checkpoint's too) it makes the
    same start layouts and ends in the same state."""
    out = ok(train_py(["checkpoint=%s" % ckpt_path, "max_iterations=5", "seed=7",
                       "train_dir=%s" % (tmp_path / "seed7")]))
    assert "resumed at iteration 3" in out
    a = load_checkpoint(os.path.join(resumed_run["dir"], "nn", "last.pth"))
    b = load_checkpoint(os.path.join(only_run_dir(tmp_path / "seed7"), "nn", "last.pth"))
    assert torch.equal(a["task_state"]["rng"], b["task_state"]["rng"])
    assert a["history"]["losses/td_loss"] == b["history"]["losses/td_loss"]


def test_resume_on_another_number_of_ranks_counts_env_steps_on(ckpt_path, tmp_path):
    """A checkpoint of a 4-rank job resumed by one process: per-rank counters go on, and the
    logged env steps (all ranks) continue from the checkpoint's total instead of dropping 4x.
    Written before checkpoints named their train file, it cannot refuse ``train=``: it says so."""
    from qmix_isaac.record.checkpoint import save_checkpoint
    ckpt = load_checkpoint(ckpt_path)
    per_rank = ckpt["runner"]["env_steps"]
    ckpt["world_size"] = 4
    del ckpt["total_env_steps"], ckpt["task_state"], ckpt["train_name"]  # as before they were stored
    four = str(tmp_path / "four_ranks.pth")
    save_checkpoint(four, ckpt)
    out = ok(train_py(["checkpoint=%s" % four, "max_iterations=4", "train_dir=%s" % (tmp_path / "r"),
                       "train=MultiAntPushQMIX"]))  # an old checkpoint cannot tell: said, not read
    assert "train=MultiAntPushQMIX is not read: the checkpoint's own train config is used" in out
    assert "the checkpoint ran on 4 ranks, this job on 1" in out
    assert "resumed at iteration 3: {} env steps".format(4 * per_rank) in out
    after = load_checkpoint(os.path.join(only_run_dir(tmp_path / "r"), "nn", "last.pth"))
    new = after["runner"]["env_steps"] - per_rank                 # this job's: one iteration
    assert 8 * 32 <= new < 2 * 8 * 32 and after["world_size"] == 1
    its = re.findall(r"\[it 4/4\] env steps ([\d,]+)", out)
    assert its and int(its[0].replace(",", "")) == 4 * per_rank + new
    assert after["total_env_steps"] == 4 * per_rank + new
    assert after["history"]["charts/env_steps"][-1][0] == 4 * per_rank + new


@pytest.mark.parametrize("num_envs", [1, 3])
def test_evaluation(ckpt_path, tmp_path, num_envs):
    # CPU and MuJoCo as the in-process check below (a GPU machine would otherwise evaluate on Newton)
    out = ok(train_py(["test=True", "checkpoint=%s" % ckpt_path, "num_envs=%d" % num_envs,
                       "eval_episodes=2", "train_dir=%s" % tmp_path, "sim_device=cpu", "rl_device=cpu",
                       "physics_engine=mujoco"]))
    assert "%d envs" % num_envs in out
    m = EVAL.search(out)
    assert m, out
    episodes, success, ret, dist = int(m.group(1)), float(m.group(2)), float(m.group(3)), float(m.group(4))
    assert episodes >= 2 and 0.0 <= success <= 1.0 and np.isfinite(ret) and 0.0 <= dist < 20.0
    assert run_dirs(tmp_path) == []  # evaluation makes no run folder
    # the same greedy evaluation in this process, from the checkpoint's task, learner and weights
    # (the online network, no exploration, the seed's worlds): the printed figures are its own
    from qmix_isaac.runner import build_runner, evaluate
    ck = load_checkpoint(ckpt_path)
    env = qmix_isaac.make("MultiBallPush", num_envs=num_envs, seed=42, physics_engine="mujoco",
                          cfg=ck["task_cfg"])
    runner = build_runner(ck["train_cfg"], env)
    runner.load_state_dict(ck["runner"])
    res = evaluate(runner.agent, env, 2)
    env.close()
    assert (episodes, success, ret, dist) == (int(res["episodes"]), round(res["success"], 3),
                                              round(res["return"], 3), round(res["final_box_dist"], 3))


def test_evaluation_turns_the_goal_curriculum_off(tmp_path):
    """A run trained with MultiAntPush's goal curriculum is evaluated at full goal distance."""
    ok(train_py(["task=MultiAntPush", "num_envs=2", "max_iterations=1", "task.env.episodeLength=8",
                 "task.task.curriculum.levels=4", "train.params.runner.log_interval=10",
                 "train_dir=%s" % tmp_path]))
    ckpt = os.path.join(only_run_dir(tmp_path), "nn", "last.pth")
    assert load_checkpoint(ckpt)["task_cfg"]["task"]["curriculum"]["levels"] == 4
    out = ok(train_py(["test=True", "checkpoint=%s" % ckpt, "num_envs=2", "eval_episodes=2"]))
    assert "task curriculum off" in out and "eval MultiAntPush: " in out, out
    start = float(re.search(r"at the start ([0-9.]+) m", out).group(1))
    assert 2.0 <= start <= 4.0, out  # goalDistance [2, 4]; level 0 of the curriculum is [0.5, 1]


# --------------------------------------------------------------------------------------------
# videos and wandb
# --------------------------------------------------------------------------------------------
def check_clip(path, frames_expected):
    frames = read_mp4(path)
    assert len(frames) == frames_expected and frames[0].shape == (480, 640, 3)
    first, last = frames[0].astype(int), frames[-1].astype(int)
    assert first.std() > 10  # not a blank picture
    changed = (np.abs(first - last).max(axis=2) > 30).mean()
    assert changed > 0.002, "first and last frames are (nearly) the same: %.4f" % changed
    seen = colours(frames[-1])
    assert min(seen.values()) > 50, seen  # box, robots and goal in the picture
    return frames


def test_video_while_training(tmp_path):
    # no gradient step before the clip, and a network whose fresh weights (seed 42) pick moving
    # actions: at hidden_dim 64 (the cpu: block's) both balls' greedy action is to stand still
    small = [a for a in SMALL if "learning_starts" not in a] + \
        ["train.params.runner.learning_starts=100000", "train.params.agent.hidden_dim=128"]
    out = ok(train_py(small + ["num_envs=2", "max_iterations=1", "capture_video=True",
                               "capture_video_freq=1", "capture_video_len=12",
                               "train_dir=%s" % tmp_path]))
    clips = glob.glob(os.path.join(only_run_dir(tmp_path), "videos", "*.mp4"))
    assert len(clips) == 1 and clips[0] in out
    check_clip(clips[0], 12)


def test_video_in_test_mode(ckpt_path, tmp_path):
    out = ok(train_py(["test=True", "checkpoint=%s" % ckpt_path, "num_envs=1", "eval_episodes=1",
                       "capture_video=True", "capture_video_len=12", "train_dir=%s" % tmp_path]))
    assert EVAL.search(out)
    clips = glob.glob(os.path.join(str(tmp_path), "play_MultiBallPush_*.mp4"))
    assert len(clips) == 1
    frames = check_clip(clips[0], 12)
    keep_artifact("video_frame.png", frames[-1])


def test_wandb_offline(tmp_path):
    ok(train_py(SMALL + ["num_envs=2", "max_iterations=1", "wandb_activate=True",
                         "wandb_logcode_dir=%s" % os.path.join(ROOT, "tasks"),
                         "train_dir=%s" % tmp_path], WANDB_MODE="offline", WANDB_SILENT="true"))
    run = only_run_dir(tmp_path)
    offline = glob.glob(os.path.join(run, "wandb", "offline-run-*"))
    assert len(offline) == 1, os.listdir(run)
    records = glob.glob(os.path.join(offline[0], "run-*.wandb"))
    assert records
    with open(records[0], "rb") as f:  # wandb_logcode_dir: the code artifact's manifest names the files
        assert b"multi_ant_push.py" in f.read()


def test_write_mp4_fractional_rate_and_refusals(tmp_path):
    """A clip at 12.5 frames/s (MultiAntPush's 80 ms policy step) keeps that rate; frames of odd
    or mixed sizes are refused before anything is written."""
    import imageio_ffmpeg

    from qmix_isaac.record.video import write_mp4
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(10)]
    path = write_mp4(os.path.join(str(tmp_path), "a.mp4"), frames, fps=12.5)
    meta = next(imageio_ffmpeg.read_frames(path))
    assert meta["fps"] == pytest.approx(12.5) and len(read_mp4(path)) == 10
    with pytest.raises(ValueError, match="even"):
        write_mp4(os.path.join(str(tmp_path), "b.mp4"), [f[:47] for f in frames])
    with pytest.raises(ValueError, match="frame 3"):
        write_mp4(os.path.join(str(tmp_path), "c.mp4"), frames[:3] + [frames[3][:46]] + frames[4:])
    assert sorted(os.listdir(str(tmp_path))) == ["a.mp4"]
    # ffmpeg failing quietly (imageio-ffmpeg does not check its exit code): caught by counting
    # the frames written; nothing is published and the temporary file is gone
    real = imageio_ffmpeg.count_frames_and_secs
    imageio_ffmpeg.count_frames_and_secs = lambda p: (real(p)[0] - 1, 0.0)
    try:
        with pytest.raises(RuntimeError, match="9 of 10 frames"):
            write_mp4(os.path.join(str(tmp_path), "d.mp4"), frames)
    finally:
        imageio_ffmpeg.count_frames_and_secs = real
    assert sorted(os.listdir(str(tmp_path))) == ["a.mp4"]  # no clip, no temporary file left


def test_video_with_a_display_that_opens_no_window(ckpt_path, tmp_path):
    """headless=False on a DISPLAY where no window opens: the viewer plays headless and the clip is
    drawn offscreen (it used to fail in the window backend after the evaluation)."""
    out = ok(train_py(["headless=False", "test=True", "checkpoint=%s" % ckpt_path, "num_envs=1",
                       "eval_episodes=1", "capture_video=True", "capture_video_len=8",
                       "train_dir=%s" % tmp_path], timeout=120, DISPLAY=":4711"))
    assert "video frames drawn offscreen" in out and EVAL.search(out), out
    clips = glob.glob(os.path.join(str(tmp_path), "play_MultiBallPush_*.mp4"))
    assert len(clips) == 1 and len(read_mp4(clips[0])) == 8


@pytest.mark.parametrize("args", [["task=MultiBallPush", "max_iterations=1"],
                                  ["test=True", "checkpoint={ckpt}", "capture_video=True"]],
                         ids=["train", "test-video"])
def test_train_dir_that_cannot_be_written(args, tmp_path, request):
    """A train_dir under a file: one line naming it, exit 2, before the task is built."""
    ckpt = request.getfixturevalue("ckpt_path") if "checkpoint={ckpt}" in args else ""
    blocker = os.path.join(str(tmp_path), "a_file")
    with open(blocker, "w") as f:
        f.write("x")
    proc = train_py([a.format(ckpt=ckpt) for a in args]
                    + ["num_envs=2", "train_dir=%s" % os.path.join(blocker, "runs")])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert "%s is not a folder" % blocker in lines[0], lines[0]
    assert "task MultiBallPush" not in proc.stdout  # nothing built
    assert os.listdir(str(tmp_path)) == ["a_file"]


# --------------------------------------------------------------------------------------------
# bad input: one line on stderr, non-zero exit, no run folder
# --------------------------------------------------------------------------------------------
BAD = {
    "unknown-task": (["task=Nope"], "unknown task"),
    "unknown-train-config": (["task=MultiBallPush", "train=NopeQMIX"], "unknown train config"),
    "mistyped-override": (["task=MultiBallPush", "num_env=4"], "num_env"),
    "negative-num-envs": (["task=MultiBallPush", "num_envs=-1"], "num_envs"),
    "zero-iterations": (["task=MultiBallPush", "max_iterations=0"], "max_iterations"),
    "missing-checkpoint": (["checkpoint={tmp}/nope.pth"], "not found"),
    "not-a-checkpoint": (["checkpoint={tmp}/notes.pth"], "not a qmix-isaac checkpoint"),
    "foreign-task-checkpoint": (["task=MultiAntPush", "checkpoint={ckpt}"], "is for task MultiBallPush"),
    "other-shape-checkpoint": (["task=MultiBallPush", "task.env.numBalls=3", "checkpoint={ckpt}"],
                               "num_agents"),
    "resume-past-max-iterations": (["checkpoint={ckpt}", "max_iterations=3"], "max_iterations"),
    "resume-other-train-config": (["checkpoint={ckpt}", "max_iterations=5", "train=MultiAntPushQMIX"],
                                  "trained with train=MultiBallPushQMIX and keeps its train config"),
    "cuda-without-cuda": (["task=MultiBallPush", "sim_device=cuda:0"], "CUDA"),
    "device-word": (["task=MultiBallPush", "rl_device=gpu"], "rl_device=gpu is not a device"),
    "test-without-checkpoint": (["task=MultiBallPush", "test=True"], "checkpoint"),
    "cpu-block-unknown-key": (["task=MultiBallPush", "+train.cpu.params.agent.hidden_dimm=3"],
                              "cpu.params.agent.hidden_dimm names no key"),
    # weights that do not fit the network: resumed, and played back
    "checkpoint-other-hidden-dim": (["checkpoint={ckpt}", "max_iterations=5",
                                     "train.params.agent.hidden_dim=32"],
                                    "checkpoint's weights do not fit this train config's network"),
    "checkpoint-other-mixer": (["test=True", "checkpoint={ckpt}", "train.params.mixer.name=vdn"],
                               "checkpoint's weights do not fit this train config's network"),
    # train values: named, before anything runs (max_iterations=1: no long run before the fix)
    "optimizer-sgd": (["task=MultiBallPush", "train.params.learner.optimizer=sgd"], "optimizer"),
    "seq-len-zero": (["task=MultiBallPush", "train.params.replay.seq_len=0"],
                     "train.params.replay.seq_len must be an integer >= 1"),
    "eps-start-word": (["task=MultiBallPush", "train.params.exploration.eps_start=abc"],
                       "train.params.exploration.eps_start must be a number"),
    "obs-dtype-unknown": (["task=MultiBallPush", "train.params.replay.obs_dtype=foo"],
                          "train.params.replay.obs_dtype must be a torch dtype"),
    "batch-size-zero": (["task=MultiBallPush", "max_iterations=1", "train.params.runner.batch_size=0"],
                        "train.params.runner.batch_size must be an integer >= 1 (got 0)"),
    "batch-size-fraction": (["task=MultiBallPush", "max_iterations=1",
                             "train.params.runner.batch_size=1.5"],
                            "train.params.runner.batch_size must be an integer >= 1 (got 1.5)"),
    # booleans are true / false; task values named
    "headless-maybe": (["task=MultiBallPush", "max_iterations=1", "headless=maybe"],
                       "headless must be true or false (got maybe)"),
    "test-maybe": (["task=MultiBallPush", "test=maybe"], "test must be true or false"),
    "num-balls-word": (["task=MultiBallPush", "task.env.numBalls=abc"],
                       "task.env.numBalls must be a number (got abc)"),
    "pipeline-word": (["task=MultiBallPush", "pipeline=fast"], "pipeline must be gpu or cpu"),
    "sigma-given": (["task=MultiBallPush", "sigma=0.4"], "the policies here are discrete"),
    "newton-buffer-zero": (["task=MultiBallPush", "physics_engine=newton", "task.sim.newton.nconmax=0"],
                           "sim.newton.nconmax must be an integer >= 1 (got 0)"),
}


def test_cpu_block_sizes_a_fresh_cpu_run_and_yields_to_the_command_line(tmp_path):
    """MultiAntPushQMIX.yaml's ``cpu:`` block: 64 worlds and its learner sizes on the CPU, except
    the keys the command line gives; the block is not stored, and a resume keeps what ran."""
    with open(os.path.join(ROOT, "cfg", "train", "MultiAntPushQMIX.yaml")) as f:
        block = yaml.safe_load(f)["cpu"]
    out = ok(train_py(["task=MultiAntPush", "max_iterations=1", "train.params.runner.batch_size=16",
                       "train_dir=%s" % tmp_path], timeout=240))
    assert "on the CPU (the train config's cpu: block" in out and "%d envs" % block["num_envs"] in out
    run = only_run_dir(tmp_path)
    with open(os.path.join(run, "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    params = cfg["train"]["params"]
    assert cfg["task"]["env"]["numEnvs"] == block["num_envs"] != 4096
    assert params["agent"]["hidden_dim"] == block["params"]["agent"]["hidden_dim"] != 256
    assert params["runner"]["replay_ratio"] == block["params"]["runner"]["replay_ratio"]
    assert params["runner"]["batch_size"] == 16 != block["params"]["runner"]["batch_size"]
    assert cfg["train"]["max_iterations"] == 2000 and "cpu" not in cfg["train"]  # max_iterations given
    ckpt = load_checkpoint(os.path.join(run, "nn", "last.pth"))
    first_collect = block["num_envs"] * (params["replay"]["seq_len"] + 1)
    assert "cpu" not in ckpt["train_cfg"] and ckpt["runner"]["env_steps"] == first_collect
    out = ok(train_py(["checkpoint=%s" % os.path.join(run, "nn", "last.pth"), "max_iterations=2",
                       "train_dir=%s" % tmp_path], timeout=240))
    assert "cpu: block" not in out and "%d envs" % block["num_envs"] in out


@pytest.mark.parametrize("args, envs", [
    (["task=MultiAntPush", "task.env.numEnvs=3"], 3),       # not the cpu: block's 64
    (["task=MultiBallPush", "task.env.numEnvs=257"], 257),  # not clamped to CPU_NUM_ENVS
], ids=["cpu-block", "cpu-clamp"])
def test_task_num_envs_wins_on_the_cpu(args, envs, tmp_path):
    """An explicit ``task.env.numEnvs`` is the world count, as ``num_envs`` is."""
    out = ok(train_py(args + ["max_iterations=1", "train_dir=%s" % tmp_path]))
    assert "task %s, %d envs," % (args[0][len("task="):], envs) in out, out
    assert "num_envs %d" % 64 not in out and "-> %d on the CPU" % 256 not in out, out
    if envs > 256:  # a resume trains on with the run's own world count, not the CPU default
        last = os.path.join(run_dirs(str(tmp_path))[0], "nn", "last.pth")
        out = ok(train_py(["checkpoint=" + last, "max_iterations=2", "train_dir=%s" % tmp_path]))
        assert "%d envs," % envs in out and "on the CPU" not in out, out


def test_help():
    proc = train_py(["--help"], timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    out = proc.stdout
    assert "tasks: MultiAntPush, MultiBallPush" in out and "MultiBallPushPPO" in out
    for key in ("seed:", "physics_engine:", "capture_video:", "train_dir:"):
        assert "\n  " + key in out, key


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case, tmp_path, request):
    args, words = BAD[case]
    if case == "cuda-without-cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    ckpt = request.getfixturevalue("ckpt_path") if any("{ckpt}" in a for a in args) else ""
    with open(os.path.join(str(tmp_path), "notes.pth"), "w") as f:
        f.write("not a checkpoint\n")
    train_dir = os.path.join(str(tmp_path), "runs")
    args = [a.format(tmp=tmp_path, ckpt=ckpt) for a in args] + ["num_envs=2", "train_dir=" + train_dir]
    if case == "negative-num-envs":
        args.remove("num_envs=2")
    proc = train_py(args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout)  # README: bad input exits with 2
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("train.py: error: ") and words in lines[0], lines[0]
    assert run_dirs(train_dir) == [] and "run folder" not in proc.stdout


# --------------------------------------------------------------------------------------------
# uploads, files, random state
# --------------------------------------------------------------------------------------------
# train.py with a bucket whose uploads fail twice during the run (the first file of nn/ at the
# first two syncs after the run folder's set-up), then work
FLAKY_BUCKET = """
import runpy, sys
from qmix_isaac.record import storage
failed = []
def upload_file(local, url):
    if "/nn/" in url and len(failed) < 2 and url not in failed:
        failed.append(url)
        raise storage.StorageError(url + ": cannot reach the storage endpoint (test)")
    print("uploaded " + url, flush=True)
storage.check_remote = lambda url: None
storage.remote_exists = lambda url: False
storage.upload_file = upload_file
sys.argv = sys.argv[1:]  # train.py and its arguments
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("learner", ["qmix", "ppo"])
def test_an_upload_failing_during_the_run_warns_and_is_retried(learner, tmp_path):
    args = SMALL + ["max_iterations=3"] if learner == "qmix" else \
        ["task=MultiBallPush", "num_envs=16", "task.env.episodeLength=20", "train.log_interval=256",
         "train=MultiBallPushPPO", "max_iterations=4"]
    proc = subprocess.run([sys.executable, "-c", FLAKY_BUCKET, os.path.join(ROOT, "train.py")] + args
                          + ["train_dir=s3://bucket/exp"], cwd=ROOT, env=_env(TMPDIR=str(tmp_path)),
                          capture_output=True, text=True, timeout=120)
    out = ok(proc)
    warnings = [line for line in proc.stderr.splitlines() if "warning: upload failed" in line]
    assert len(warnings) == 2 and "tries again" in warnings[0], proc.stderr  # one line per failure
    run = re.search(r"run folder (s3://\S+) ", out).group(1)
    for name in ("config.yaml", "nn/last.pth", "nn/best.pth", "curves.png"):
        assert "uploaded %s/%s" % (run, name) in out, out
    assert "done: " in out
    assert glob.glob(os.path.join(str(tmp_path), "qmix-isaac-run-*")) == []  # staging removed


def test_a_failed_last_upload_keeps_the_staging_folder(tmp_path, monkeypatch):
    from qmix_isaac.record import storage

    def fail(local, url):
        raise storage.StorageError(url + ": access denied (test)")
    monkeypatch.setattr(storage, "upload_file", fail)
    monkeypatch.setattr(storage.tempfile, "tempdir", str(tmp_path))
    folder = storage.RunFolder("s3://bucket/run")
    with open(folder.path("config.yaml"), "w") as f:
        f.write("a")
    assert folder.try_sync() is False  # during the run: a warning
    with pytest.raises(storage.StorageError, match="access denied"):
        folder.close()  # at the end: the caller names the folder, which is kept
    assert os.path.isfile(folder.path("config.yaml"))


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from qmix_isaac.record.checkpoint import atomic_write_text, save_checkpoint
    old = os.umask(0o027)
    try:
        save_checkpoint(os.path.join(str(tmp_path), "nn", "last.pth"), {"x": 1})
        atomic_write_text(os.path.join(str(tmp_path), "config.yaml"), "a: 1\n")
    finally:
        os.umask(old)
    for name in ("nn/last.pth", "config.yaml"):
        assert os.stat(os.path.join(str(tmp_path), name)).st_mode & 0o777 == 0o640, name
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith(".tmp-")] == []


def test_cuda_random_state_is_the_current_devices(monkeypatch):
    """A checkpoint of an 8-GPU job (old format: every device's state) resumes on one GPU."""
    from qmix_isaac.record.checkpoint import rng_state, set_rng_state
    mine = torch.full((8,), 7, dtype=torch.uint8)
    restored = []

    def set_all(states):  # torch's on one GPU: state i goes to device i
        if len(states) > 1:
            raise IndexError("list index out of range")
        restored.append(states[0])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": mine.clone())
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [mine.clone()])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": restored.append(s))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
    state = rng_state()
    assert torch.equal(state["cuda"], mine)  # one device's state, not a list of all
    set_rng_state(state)
    old = dict(state, cuda=[torch.full((8,), i, dtype=torch.uint8) for i in range(8)])
    set_rng_state(old)
    assert [int(s[0]) for s in restored] == [7, 0]


def test_a_drawn_seed_is_drawn_before_the_rank_is_added(monkeypatch):
    import train
    monkeypatch.setattr(random.SystemRandom, "randint", lambda self, a, b: 1000)
    assert train.set_seed(-1, False, 3) == 1003  # not 2 (-1 + 3)
    assert train.set_seed(5, False, 3) == 8


def test_worlds_overflowing_the_newton_buffers_are_logged_and_warned_once():
    """Newton with room for 6 contacts per world (``task.sim.newton.nconmax``): the standing
    ants overflow it; the log gets the count and the run one warning naming the key."""
    pytest.importorskip("newton", reason="newton[sim] not installed")
    import qmix_isaac
    from qmix_isaac.record.run import engine_health
    env = qmix_isaac.make("MultiAntPush", num_envs=2, seed=0, physics_engine="newton", nconmax=6)
    env.reset()
    acts = torch.ones(2, env.num_agents, len(env.action_branches), dtype=torch.long)  # zero torque
    lines, stats = [], {}
    say = lambda text, **kw: lines.append(text)  # noqa: E731
    assert engine_health(env, stats, say, False) is False  # nothing stepped yet
    assert stats == {"perf/engine_overflow_worlds": 0.0} and lines == []
    for _ in range(6):
        env.step(acts)
    assert engine_health(env, stats, say, False) is True
    assert stats["perf/engine_overflow_worlds"] == 2.0
    assert len(lines) == 1 and "2 worlds overflowed the newton engine" in lines[0]
    assert "nconmax 6" in lines[0] and "task.sim.newton.nconmax" in lines[0]
    env.step(acts)
    assert engine_health(env, stats, say, True) is True and len(lines) == 1  # once
    env.close()
    ref = qmix_isaac.make("MultiAntPush", num_envs=2, seed=0, physics_engine="mujoco")
    stats = {}
    assert engine_health(ref, stats, say, False) is False and stats == {}
    ref.close()


@pytest.fixture
def no_gl_env(monkeypatch):
    for key in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY"):
        monkeypatch.setenv(key, "")  # recorded, so that what the test sets is undone
        monkeypatch.delenv(key)


def test_gl_backend_only_when_something_is_drawn(no_gl_env, monkeypatch):
    """No display, no CUDA, no OSMesa: the viewer (nothing drawn, it plays headless) forces no
    backend; a video is one line saying what to install."""
    from qmix_isaac.record import video
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(video, "_osmesa_installed", lambda: False)
    assert video.choose_gl_backend(False, offscreen=False) == ""
    assert "MUJOCO_GL" not in os.environ
    with pytest.raises(video.GLBackendError, match="apt-get install libosmesa6"):
        video.choose_gl_backend(True, offscreen=True)
    assert "MUJOCO_GL" not in os.environ
    monkeypatch.setattr(video, "_osmesa_installed", lambda: True)
    assert video.choose_gl_backend(True, offscreen=True) == os.environ["MUJOCO_GL"] == "osmesa"


# --------------------------------------------------------------------------------------------
# the viewer
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("display", [None, ":4711"], ids=["unset", "no-server"])
def test_viewer_without_display_plays_headless(ckpt_path, tmp_path, display):
    out = ok(train_py(["headless=False", "test=True", "checkpoint=%s" % ckpt_path, "num_envs=1",
                       "eval_episodes=1", "train_dir=%s" % tmp_path], timeout=120, DISPLAY=display))
    why = "no display" if display is None else "cannot open a viewer window"
    assert why in out and "playing headless instead" in out, out
    assert EVAL.search(out)


class _XTest:
    """Key presses on an X display through libXtst (ctypes); None when the library is missing."""

    KEYSYM = {"Escape": 0xFF1B, "v": 0x0076}

    def __init__(self, display):
        self.x11 = ctypes.CDLL("libX11.so.6")
        self.xtst = ctypes.CDLL("libXtst.so.6")
        self.x11.XOpenDisplay.restype = ctypes.c_void_p
        self.x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.x11.XKeysymToKeycode.restype = ctypes.c_ubyte
        self.x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        self.x11.XFlush.argtypes = self.x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                                ctypes.c_ulong]
        self.xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 3 + [ctypes.c_ulong]
        self.d = self.x11.XOpenDisplay(display.encode())
        assert self.d, "cannot open display %s" % display
        self.xtst.XTestFakeMotionEvent(self.d, -1, 200, 200, 0)  # pointer (and focus) on the window

    def press(self, key):
        code = self.x11.XKeysymToKeycode(self.d, self.KEYSYM[key])
        self.xtst.XTestFakeKeyEvent(self.d, code, 1, 0)
        self.xtst.XTestFakeKeyEvent(self.d, code, 0, 0)
        self.x11.XFlush(self.d)

    def close(self):
        self.x11.XCloseDisplay(self.d)


@pytest.fixture
def xvfb():
    """A private Xvfb server (display number chosen by Xvfb); skips when Xvfb is not installed."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb)")
    r, w = os.pipe()
    server = subprocess.Popen([exe, "-displayfd", str(w), "-screen", "0", "1280x1024x24",
                               "-nolisten", "tcp"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r) as f:
        number = f.readline().strip()
    try:
        assert number, "Xvfb did not start"
        yield ":" + number
    finally:
        server.terminate()
        server.wait(timeout=10)


def screenshot(display, path):
    """One frame of the whole X screen through the ffmpeg in imageio-ffmpeg's wheel (x11grab)."""
    import imageio_ffmpeg
    from matplotlib.image import imread
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "x11grab",
                    "-video_size", "1280x1024", "-i", display, "-frames:v", "1", path],
                   check=True, timeout=30)
    return (imread(path)[..., :3] * 255).round().astype(np.uint8)


def test_viewer_on_xvfb(ckpt_path, xvfb, tmp_path):
    try:
        keys = _XTest(xvfb)
    except OSError:  # no libXtst: the run ends by viewer_steps instead of ESC
        keys = None
    # with keys, ESC must end the run: a step limit far beyond what even unsynced stepping
    # reaches between the key presses (V turns real-time sync off for half a second)
    limit = 100000 if keys is not None else 300
    out_path = os.path.join(str(tmp_path), "stdout.txt")
    with open(out_path, "w") as out_f:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train.py"), "headless=False", "test=True",
             "checkpoint=%s" % ckpt_path, "num_envs=1", "viewer_steps=%d" % limit,
             "capture_video=True", "capture_video_len=8",  # recorded after the window closes
             "train_dir=%s" % tmp_path], cwd=ROOT, env=_env(DISPLAY=xvfb), stdout=out_f,
            stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 120
            while "viewer: ESC quits" not in open(out_path).read():
                assert proc.poll() is None and time.time() < deadline, open(out_path).read()
                time.sleep(0.2)
            time.sleep(2.0)  # a few real-time steps drawn
            shot = screenshot(xvfb, os.path.join(str(tmp_path), "viewer.png"))
            if keys is not None:
                for key in ("v", "v", "Escape"):
                    keys.press(key)
                    time.sleep(0.5)
                keys.close()
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = open(out_path).read()
    assert proc.returncode == 0, out + err
    keep_artifact("viewer_xvfb.png", shot)
    assert shot.std() > 20, "blank screenshot"
    seen = colours(shot)
    assert min(seen.values()) > 200, seen  # robots, box and goal drawn in the window
    steps = int(re.search(r"viewer closed after (\d+) steps", out).group(1))
    if keys is not None:  # ESC closed it early; V toggled real-time sync off and on again
        assert steps < limit, out
        assert "real-time sync off" in out and "real-time sync on" in out, out
    else:
        assert steps == limit
    assert not EVAL.search(out)  # played in the window, not evaluated headless
    clips = glob.glob(os.path.join(str(tmp_path), "play_MultiBallPush_*.mp4"))
    assert len(clips) == 1 and clips[0] in out  # capture_video=True beside the viewer
    check_clip(clips[0], 8)
