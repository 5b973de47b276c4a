"""Object storage through fsspec: gs:// (gcsfs), memory://, local folders.

TensorFlow's own gs:// file system ignores STORAGE_EMULATOR_HOST, so every read and
write of the job goes through these helpers; Keras callbacks write to a local staging
folder that `sync_up` mirrors to the bucket.
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

if os.environ.get("STORAGE_EMULATOR_HOST"):
    # gcsfs >= 2026.3 probes a gRPC API per bucket and stalls 60 s against an emulator.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402
from fsspec.implementations.local import LocalFileSystem  # noqa: E402

log = logging.getLogger(__name__)
T = TypeVar("T")

# Retries on top of gcsfs's own. gcsfs retries each HTTP request 6 times (about 31 s of
# back-off) on 408/429/5xx, connection resets and other aiohttp errors, but then gives up
# with exceptions that are not OSError (HttpError, aiohttp errors), it has no read timeout
# (a stalled connection hangs for ever), and an outage longer than its 31 s fails the
# operation. Here: a read timeout per socket read (so a stall becomes a retried error),
# then whole operations retried with exponential back-off and jitter for transient errors,
# bounded by ATTEMPTS and by a time budget; what is left becomes a one-line OSError.
ATTEMPTS = 5
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0


def retry_budget_s() -> float:
    """Seconds one operation may spend retrying ($GENRE_JOB_STORAGE_RETRY_S, default 120)."""
    return float(os.environ.get("GENRE_JOB_STORAGE_RETRY_S", "120"))


def read_timeout_s() -> float:
    """Seconds a gs:// socket read may stall ($GENRE_JOB_STORAGE_READ_TIMEOUT_S, default 120)."""
    return float(os.environ.get("GENRE_JOB_STORAGE_READ_TIMEOUT_S", "120"))


class StorageError(OSError):
    """Object storage failed after retries, or for good; the message is one line."""


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system behind `url` and the path inside it."""
    options: dict[str, object] = {}
    protocol = fsspec.utils.get_protocol(url)
    if protocol in ("gs", "gcs"):
        import aiohttp

        options["requests_timeout"] = aiohttp.ClientTimeout(
            total=None, sock_connect=30, sock_read=read_timeout_s()
        )
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            options["token"] = "anon"  # an emulator takes no credentials
    return fsspec.core.url_to_fs(url, **options)


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import aiohttp

        types.append(aiohttp.ClientError)
    except ImportError:  # pragma: no cover
        pass
    try:
        import requests

        types += [
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ]
    except ImportError:  # pragma: no cover
        pass
    try:
        from gcsfs.retry import ChecksumError

        types.append(ChecksumError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def is_transient(error: BaseException) -> bool:
    """Worth another try: throttling, server errors, resets, timeouts. Not: missing,
    already there, forbidden, bad request."""
    if isinstance(
        error,
        FileNotFoundError | FileExistsError | PermissionError | IsADirectoryError,
    ):
        return False
    code = getattr(error, "code", None)  # gcsfs HttpError
    if type(error).__name__ == "HttpError":
        return str(code) in {"408", "429", "500", "502", "503", "504"}
    return isinstance(error, _transient_types())


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def _final(error: BaseException, what: str, url: str) -> BaseException:
    """The exception callers see: FileNotFoundError, FileExistsError and PermissionError
    stay what they are (callers act on them); everything else is a one-line StorageError."""
    if isinstance(error, FileNotFoundError | FileExistsError):
        return error
    if isinstance(error, PermissionError):
        return PermissionError(f"{what} {url}: {_one_line(error)}")
    if isinstance(error, OSError) and str(error).startswith("Forbidden"):  # gcsfs: HTTP 403
        return PermissionError(f"{what} {url}: {_one_line(error)}")
    return StorageError(f"{what} {url} failed: {_one_line(error)}")


_jitter = random.Random()


def retrying(what: str, url: str, operation: Callable[[], T]) -> T:
    """Run `operation`, retrying transient storage errors with exponential back-off.

    Python's global random state is put back afterwards: gcsfs draws its back-off jitter
    from it, and Keras draws layer seeds from it, so without this a retry would change
    the trained model (a flaky run would not give the clean run's outputs).
    """
    state = random.getstate()
    try:
        return _retrying(what, url, operation)
    finally:
        random.setstate(state)


def _retrying(what: str, url: str, operation: Callable[[], T]) -> T:
    deadline = time.monotonic() + retry_budget_s()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return operation()
        except Exception as error:  # storage back ends raise many kinds
            delay = min(FIRST_DELAY_S * 2 ** (attempt - 1), MAX_DELAY_S)
            delay *= 0.5 + _jitter.random()
            if (
                not is_transient(error)
                or attempt == ATTEMPTS
                or time.monotonic() + delay > deadline
            ):
                raise _final(error, what, url) from error
            log.warning(
                "storage: %s %s failed (%s); retry %d of %d in %.1f s",
                what,
                url,
                _one_line(error),
                attempt,
                ATTEMPTS - 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        return os.path.exists(path)
    # Not fs.exists: the generic one answers False on any error (an outage is not "absent").
    return retrying("check", url, lambda: _exists(fs, path))


def _exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        fs.info(path)
        return True
    except FileNotFoundError:
        return False


def local_path(url: str) -> str | None:
    """Where `url` is on this machine's file system; None for other storage."""
    fs, path = filesystem(url)
    return path if isinstance(fs, LocalFileSystem) else None


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return retrying("read", url, lambda: fs.cat_file(path))


def write_bytes(url: str, data: bytes, create: bool = False) -> None:
    """Write `data` so that a reader sees the old object or the whole new one, never a part.

    An object store replaces an object in one request; a local file is written to a
    temporary name and renamed into place. With `create`, FileExistsError when the object
    is already there (gs://: an `ifGenerationMatch=0` precondition; local: a hard link,
    which fails on an existing name; memory: exclusive open).
    """
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        Path(temporary).write_bytes(data)
        if create:
            try:
                os.link(temporary, path)
            finally:
                os.unlink(temporary)
        else:
            os.replace(temporary, path)
    else:
        mode = "create" if create else "overwrite"
        retrying("write", url, lambda: fs.pipe_file(path, data, mode=mode))


def remove(url: str) -> None:
    """Delete one object; no error when it is already gone."""
    fs, path = filesystem(url)

    def delete() -> None:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass

    retrying("delete", url, delete)


def write_text(url: str, text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


def list_files(url: str) -> list[str]:
    """Paths below `url`, relative to it; empty when it does not exist."""
    fs, root = filesystem(url)
    root = root.rstrip("/")

    def find() -> list[str]:
        try:
            return fs.find(root)
        except FileNotFoundError:
            return []

    return sorted(posixpath.relpath(path, root) for path in retrying("list", url, find))


def download_tree(url: str, local_dir: Path, skip: Iterable[str] = ()) -> int:
    """Copy every file below `url` into `local_dir`; returns how many."""
    fs, root = filesystem(url)
    skipped = set(skip)
    count = 0
    for relative in list_files(url):
        if relative.split("/")[0] in skipped:
            continue
        target = local_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        source = f"{root.rstrip('/')}/{relative}"
        retrying("download", join(url, relative), lambda: fs.get_file(source, str(target)))  # noqa: B023
        count += 1
    return count


class Mirror:
    """Uploads the new and changed files of a local folder to a URL, one file at a time.

    `routes` send a top folder elsewhere: {"tensorboard": URL} puts tensorboard/x at URL/x
    (Vertex AI's AIP_TENSORBOARD_LOG_DIR and AIP_CHECKPOINT_DIR).
    """

    def __init__(self, local_dir: Path, url: str, routes: dict[str, str] | None = None) -> None:
        self.local_dir = local_dir
        self.url = url
        self.routes = dict(routes or {})
        self._seen: dict[str, tuple[int, int]] = {}

    def target(self, relative: str) -> str:
        top, _, rest = relative.partition("/")
        return (
            join(self.routes[top], rest)
            if rest and top in self.routes
            else join(self.url, relative)
        )

    def remember_current(self) -> None:
        """Treat what is in the folder now as already uploaded (it was just downloaded)."""
        for file, stamp in self._stamps().items():
            self._seen[file] = stamp

    def _stamps(self) -> dict[str, tuple[int, int]]:
        stamps = {}
        for file in sorted(self.local_dir.rglob("*")):
            if file.is_file() and ".tmp" not in file.name:
                stat = file.stat()
                stamps[file.relative_to(self.local_dir).as_posix()] = (
                    stat.st_mtime_ns,
                    stat.st_size,
                )
        return stamps

    def sync(self, order_last: str = "backup") -> int:
        """Upload what changed; files under `order_last` go last, so the bucket's
        resume state never runs ahead of the checkpoints and logs it describes."""
        changed = [f for f, stamp in self._stamps().items() if self._seen.get(f) != stamp]
        changed.sort(key=lambda f: (f.startswith(order_last + "/"), f))
        for relative in changed:
            path = self.local_dir / relative
            stamp = (path.stat().st_mtime_ns, path.stat().st_size)
            write_bytes(self.target(relative), path.read_bytes())
            self._seen[relative] = stamp
        if changed:
            log.debug("synced %d files to %s", len(changed), self.url)
        return len(changed)
