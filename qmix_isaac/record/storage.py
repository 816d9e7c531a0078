"""Run folders and checkpoints on local disk or on object storage (any fsspec URL).

    train_dir=runs                       # local (default)
    train_dir=s3://my-bucket/qmix        # AWS S3 through s3fs; credentials from the standard chain
    checkpoint=s3://my-bucket/qmix/<run>/nn/last.pth

A remote run folder is *staged*: the run writes into a local staging folder exactly as it writes a
local run (TensorBoard, checkpoints, curves, videos), and :meth:`RunFolder.sync` uploads every file
that changed since the last sync, each as one object PUT (multipart uploads of large files also
appear only when complete). So a checkpoint in the bucket is the old one or the new one, never
part of one. Nothing is written locally before the remote target has been checked
(:func:`check_remote`), and the staging folder is removed when the run ends. An upload that fails
during the run (:meth:`RunFolder.try_sync`) is one warning line and is tried again at the next
sync; one that fails at the end (:meth:`RunFolder.close`) keeps the staging folder for the caller
to name.

Credentials are never read or printed here: fsspec / s3fs / botocore take them from the standard
chain (``AWS_ACCESS_KEY_ID``…, ``~/.aws``, instance roles); ``AWS_ENDPOINT_URL`` points the chain
at an S3-compatible server.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, Optional, Tuple

__all__ = ["RunFolder", "StorageError", "check_remote", "download_file", "is_url", "join",
           "new_run_folder", "open_bytes_io", "read_bytes", "remote_exists", "upload_file"]


class StorageError(ValueError):
    """A remote location that cannot be used (no bucket, no credentials, no network): one line."""


def is_url(path: str) -> bool:
    """True for a remote fsspec URL (``s3://…``, ``gs://…``); local paths and ``file://`` are local."""
    path = str(path)
    return "://" in path and not path.startswith("file://")


def join(base: str, *parts: str) -> str:
    if is_url(base):
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])
    return os.path.join(base, *parts)


def _explain(url: str, exc: BaseException) -> str:
    """One line for a storage failure, by kind (the botocore / s3fs / fsspec exception classes)."""
    kind = type(exc).__name__
    detail = (str(exc).strip().splitlines() or [""])[0][:160]
    if kind == "NoCredentialsError" or kind == "PartialCredentialsError":
        return ("%s: no credentials found (the standard AWS chain: AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, or an instance role)" % url)
    if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionError",
                "ClientConnectorError", "ReadTimeoutError", "ServerDisconnectedError"):
        return "%s: cannot reach the storage endpoint (%s)" % (url, detail)
    if isinstance(exc, PermissionError):
        return "%s: access denied (%s)" % (url, detail)
    if isinstance(exc, FileNotFoundError):
        return "%s: %s" % (url, detail or "not found")
    return "%s: %s%s" % (url, kind, ": " + detail if detail else "")


def _fs(url: str) -> Tuple[Any, str]:
    """(filesystem, path inside it) for ``url``; a missing backend package is a StorageError."""
    try:
        import fsspec
    except ImportError:
        raise StorageError("%s needs fsspec: pip install fsspec s3fs" % url)
    protocol = url.split("://", 1)[0]
    kwargs: Dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        # fail fast instead of botocore's long retry loop when the endpoint cannot be reached
        kwargs["config_kwargs"] = {"connect_timeout": 10, "retries": {"max_attempts": 3}}
    try:
        return fsspec.core.url_to_fs(url, **kwargs)
    except ImportError as exc:
        if protocol.startswith("s3"):
            raise StorageError("%s needs s3fs: pip install s3fs" % url)
        raise StorageError("%s needs the fsspec backend for %s:// (%s)"
                           % (url, protocol, str(exc).splitlines()[0]))
    except ValueError as exc:
        raise StorageError("%s: %s" % (url, str(exc).splitlines()[0]))


def _bucket(path: str) -> str:
    return path.split("/", 1)[0]


def check_local_dir(path: str) -> None:
    """Raise StorageError (one line) unless ``path`` is, or can be created as, a folder this
    process can write in. Creates nothing: checks the nearest folder that exists."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise StorageError("%s is not a folder" % probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StorageError("%s is not writable" % probe)


def check_remote(url: str) -> None:
    """Raise StorageError (one line) unless the bucket of ``url`` exists and can be listed."""
    fs, path = _fs(url)
    bucket = _bucket(path)
    try:
        fs.ls(bucket, detail=False)
    except FileNotFoundError:
        raise StorageError("%s: bucket %r does not exist (create it first)" % (url, bucket))
    except Exception as exc:  # credentials, network, permissions: botocore/aiohttp exception kinds
        raise StorageError(_explain(url, exc))


def remote_exists(url: str) -> bool:
    fs, path = _fs(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:
        raise StorageError(_explain(url, exc))


def read_bytes(url: str) -> bytes:
    """The whole object at ``url``; FileNotFoundError when it is not there, StorageError otherwise."""
    fs, path = _fs(url)
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise StorageError(_explain(url, exc))


def upload_file(local: str, url: str) -> None:
    """One PUT of ``local`` to ``url`` (the object appears complete or not at all)."""
    fs, path = _fs(url)
    try:
        fs.put_file(local, path)
    except Exception as exc:
        raise StorageError(_explain(url, exc))


def download_file(url: str, local: str) -> None:
    data = read_bytes(url)
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    with open(local, "wb") as f:
        f.write(data)


class RunFolder:
    """A run folder at ``target`` (local path or URL); files are written under :attr:`local`.

    For a local target :attr:`local` is the target and :meth:`sync` does nothing. For a URL,
    :attr:`local` is a staging folder and :meth:`sync` uploads the files that changed.
    """

    def __init__(self, target: str) -> None:
        self.target = str(target)
        self.remote = is_url(self.target)
        if self.remote:
            self.local = tempfile.mkdtemp(prefix="qmix-isaac-run-")
        else:
            self.local = self.target
        self._sent: Dict[str, Tuple[int, int]] = {}

    def path(self, *parts: str) -> str:
        """Local path of a file of the run (write here, then :meth:`sync`)."""
        return os.path.join(self.local, *parts)

    def url(self, *parts: str) -> str:
        """Where a file of the run ends up (its URL, or its local path)."""
        return join(self.target, *parts)

    def sync(self) -> None:
        """Upload every file written or changed since the last sync (remote targets only)."""
        if not self.remote:
            return
        for folder, _, files in os.walk(self.local):
            for name in sorted(files):
                if name.startswith(".tmp-"):  # an atomic write in progress
                    continue
                local = os.path.join(folder, name)
                rel = os.path.relpath(local, self.local)
                try:
                    st = os.stat(local)
                except FileNotFoundError:
                    continue
                stamp = (st.st_size, st.st_mtime_ns)
                if self._sent.get(rel) == stamp:
                    continue
                upload_file(local, self.url(*rel.split(os.sep)))
                self._sent[rel] = stamp

    def try_sync(self) -> bool:
        """:meth:`sync` during a run: a failed upload is one warning line on stderr, and what was
        not sent is sent at the next sync (the staging folder keeps it). False when it failed."""
        try:
            self.sync()
        except StorageError as exc:
            print("[qmix-isaac] warning: upload failed (%s); the run goes on and tries again at "
                  "the next log (files staged in %s)" % (exc, self.local), file=sys.stderr, flush=True)
            return False
        return True

    def close(self) -> None:
        """Last sync; the staging folder of a remote run is then removed (kept when the upload
        fails: StorageError, and the caller names :attr:`local`)."""
        self.sync()
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)

    def discard(self) -> None:
        """Forget a run that could not be set up: staging removed; a local folder removed."""
        shutil.rmtree(self.local, ignore_errors=True)


def new_run_folder(train_dir: str, name: str, stamp: str) -> RunFolder:
    """A new ``<train_dir>/<name>_<stamp>`` (``_2``, ``_3``… when taken). Local folders are created
    here; for a remote target (checked beforehand with :func:`check_remote`, train.py does so
    before building the task) only the staging folder is, after the name is known to be free."""
    base = join(str(train_dir), name + "_" + stamp)
    if is_url(base):
        run, n = base, 1
        while remote_exists(run):
            n += 1
            run = "%s_%d" % (base, n)
        folder = RunFolder(run)
        os.makedirs(folder.path("nn"))
        return folder
    run, n = base, 1
    while True:
        try:
            os.makedirs(run)
            break
        except FileExistsError:
            n += 1
            run = "%s_%d" % (base, n)
        except OSError as exc:
            raise StorageError("cannot create the run folder %s: %s" % (run, exc.strerror or exc))
    os.makedirs(os.path.join(run, "nn"))
    return RunFolder(run)


def open_bytes_io(path: str) -> Optional[io.BytesIO]:
    """A checkpoint's bytes from a URL (None for a local path, which torch reads itself)."""
    if not is_url(path):
        return None
    return io.BytesIO(read_bytes(path))
