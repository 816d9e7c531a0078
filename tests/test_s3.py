"""Run folders and checkpoints on S3 (issue 6), against a local S3-compatible server.

moto's threaded server speaks the S3 HTTP API on 127.0.0.1; train.py reaches it through s3fs
exactly as it would reach AWS (``AWS_ENDPOINT_URL`` points the standard credential chain at it).
Covers: a run writes its whole folder to the bucket and nothing stays on local disk; resume and
playback from ``s3://`` checkpoints; a missing bucket, missing credentials, an unreachable
endpoint and a missing checkpoint are one line each with nothing written; the secret key never
appears in the output.
"""
import glob
import os
import re
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from test_train import EVAL, SMALL, train_py  # noqa: E402

from qmix_isaac.record.checkpoint import load_checkpoint  # noqa: E402
from qmix_isaac.record.storage import RunFolder  # noqa: E402

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e .[dev])")
pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -e .[dev])")

SECRET = "qmix-test-secret-d41d8cd98f00"
RUN = re.compile(r"run folder (s3://\S+) ")


@pytest.fixture(scope="module")
def s3():
    """(endpoint URL, boto3 client) of a fresh local S3 server with bucket ``runs``."""
    import boto3
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = "http://%s:%d" % (host, port)
    client = boto3.client("s3", endpoint_url=url, aws_access_key_id="AKIATEST",
                          aws_secret_access_key=SECRET, region_name="us-east-1")
    client.create_bucket(Bucket="runs")
    saved = dict(os.environ)
    os.environ.update(aws_env(url, os.environ.get("TMPDIR", "/tmp")))  # reads from this process
    os.environ.pop("TMPDIR") if "TMPDIR" not in saved else os.environ.update(TMPDIR=saved["TMPDIR"])
    yield url, client
    os.environ.clear()
    os.environ.update(saved)
    server.stop()


def aws_env(endpoint, tmp, **extra):
    """A clean AWS chain: only what the test gives (no ~/.aws, no instance metadata), and a
    private TMPDIR so that staging folders left behind are visible."""
    env = {"AWS_ACCESS_KEY_ID": "AKIATEST", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true", "TMPDIR": str(tmp)}
    env.update(extra)
    return env


def keys(client, prefix=""):
    resp = client.list_objects_v2(Bucket="runs", Prefix=prefix)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def staged(tmp):
    """Staging folders (qmix-isaac-run-*) left in the run's TMPDIR."""
    return glob.glob(os.path.join(str(tmp), "qmix-isaac-run-*"))


def no_secret(proc):
    assert SECRET not in proc.stdout + proc.stderr, "the secret key was printed"


def one_line_error(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    no_secret(proc)


@pytest.fixture(scope="module")
def s3_run(s3, tmp_path_factory):
    endpoint, client = s3
    tmp = tmp_path_factory.mktemp("s3tmp")
    proc = train_py(SMALL + ["max_iterations=3", "train_dir=s3://runs/exp"],
                    **aws_env(endpoint, tmp))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    no_secret(proc)
    return RUN.search(proc.stdout).group(1), tmp, proc


def test_a_run_writes_its_folder_to_the_bucket(s3, s3_run):
    _, client = s3
    run_url, tmp, proc = s3_run
    assert run_url.startswith("s3://runs/exp/MultiBallPush_")
    prefix = run_url[len("s3://runs/"):] + "/"
    names = [k[len(prefix):] for k in keys(client, prefix)]
    for want in ("config.yaml", "nn/last.pth", "nn/best.pth", "curves.png"):
        assert want in names, names
    assert any(n.startswith("summaries/events.out.tfevents") for n in names), names
    assert staged(tmp) == []  # the staging folder is gone
    assert not os.path.exists(os.path.join(ROOT, "runs", os.path.basename(run_url)))
    ckpt = load_checkpoint(run_url + "/nn/last.pth")  # readable straight from the bucket
    assert ckpt["iteration"] == 3 and ckpt["task"] == "MultiBallPush"


def test_resume_and_playback_from_the_bucket(s3, s3_run, tmp_path):
    endpoint, client = s3
    run_url, _, _ = s3_run
    proc = train_py(["checkpoint=%s/nn/last.pth" % run_url, "num_envs=8", "max_iterations=5",
                     "train_dir=s3://runs/exp"], **aws_env(endpoint, tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    no_secret(proc)
    assert "resumed at iteration 3" in proc.stdout
    new_url = RUN.search(proc.stdout).group(1)
    assert new_url != run_url
    ckpt = load_checkpoint(new_url + "/nn/last.pth")
    assert ckpt["iteration"] == 5
    # the run's best so far was carried over: the new best.pth scores at least as high
    old_best = load_checkpoint(run_url + "/nn/best.pth")["best_score"]
    assert load_checkpoint(new_url + "/nn/best.pth")["best_score"] >= old_best
    play = train_py(["test=True", "checkpoint=%s/nn/best.pth" % new_url, "num_envs=8",
                     "eval_episodes=8"], **aws_env(endpoint, tmp_path))
    assert play.returncode == 0, play.stdout + play.stderr
    assert EVAL.search(play.stdout), play.stdout
    assert staged(tmp_path) == []


def test_missing_bucket_is_one_line_and_writes_nothing(s3, tmp_path):
    endpoint, client = s3
    before = keys(client)
    proc = train_py(SMALL + ["max_iterations=1", "train_dir=s3://no-such-bucket/exp"],
                    **aws_env(endpoint, tmp_path))
    one_line_error(proc, "bucket 'no-such-bucket' does not exist")
    assert staged(tmp_path) == [] and keys(client) == before


def test_no_credentials_is_one_line(s3, tmp_path, monkeypatch):
    endpoint, _ = s3
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    env = {k: v for k, v in aws_env(endpoint, tmp_path).items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    proc = train_py(SMALL + ["max_iterations=1", "train_dir=s3://runs/exp"], **env)
    one_line_error(proc, "no credentials found")
    assert staged(tmp_path) == []


def test_unreachable_endpoint_is_one_line(tmp_path):
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = train_py(SMALL + ["max_iterations=1", "train_dir=s3://runs/exp"],
                    **aws_env("http://127.0.0.1:%d" % port, tmp_path))
    one_line_error(proc, "cannot reach the storage endpoint")
    assert staged(tmp_path) == []


def test_missing_checkpoint_in_the_bucket_is_one_line(s3, tmp_path):
    endpoint, _ = s3
    proc = train_py(["test=True", "checkpoint=s3://runs/nope/nn/last.pth"],
                    **aws_env(endpoint, tmp_path))
    one_line_error(proc, "checkpoint not found: s3://runs/nope/nn/last.pth")


def test_sync_uploads_only_what_changed(tmp_path, monkeypatch):
    from qmix_isaac.record import storage
    sent = []
    monkeypatch.setattr(storage, "upload_file", lambda local, url: sent.append(url))
    monkeypatch.setattr(storage.tempfile, "tempdir", str(tmp_path))  # staging under tmp_path
    folder = RunFolder("s3://bucket/run")
    assert os.path.dirname(folder.local) == str(tmp_path)
    try:
        os.makedirs(folder.path("nn"))
        with open(folder.path("config.yaml"), "w") as f:
            f.write("a")
        with open(folder.path("nn", ".tmp-123"), "w") as f:  # an atomic write in progress
            f.write("partial")
        folder.sync()
        assert sent == ["s3://bucket/run/config.yaml"]
        folder.sync()
        assert sent == ["s3://bucket/run/config.yaml"]  # unchanged: not sent again
        with open(folder.path("config.yaml"), "w") as f:
            f.write("bb")
        torch.save({"x": 1}, folder.path("nn", "last.pth"))
        folder.sync()
        assert sorted(sent[1:]) == ["s3://bucket/run/config.yaml", "s3://bucket/run/nn/last.pth"]
    finally:
        staging = folder.local
        folder.close()
    assert not os.path.exists(staging)
    assert glob.glob(os.path.join(str(tmp_path), "*")) == []
