"""Object storage through fsspec: gs:// (gcsfs), memory://, local folders.

TensorFlow's own gs:// file system ignores STORAGE_EMULATOR_HOST, so every read and
write of the job goes through these helpers; Keras callbacks write to a local staging
folder that `sync_up` mirrors to the bucket.
"""

from __future__ import annotations

import logging
import os
import posixpath
import uuid
from collections.abc import Iterable
from pathlib import Path

if os.environ.get("STORAGE_EMULATOR_HOST"):
    # gcsfs >= 2026.3 probes a gRPC API per bucket and stalls 60 s against an emulator.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402
from fsspec.implementations.local import LocalFileSystem  # noqa: E402

log = logging.getLogger(__name__)

# Posters fetched per call: gcsfs keeps the requests of one call in flight together.
FETCH_CHUNK = 512


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system behind `url` and the path inside it."""
    options: dict[str, object] = {}
    protocol = fsspec.utils.get_protocol(url)
    if protocol in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
        options["token"] = "anon"  # an emulator takes no credentials
    return fsspec.core.url_to_fs(url, **options)


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return fs.cat_file(path)


def write_bytes(url: str, data: bytes) -> None:
    """Write `data` so that a reader sees the old object or the whole new one, never a part.

    An object store replaces an object in one request; a local file is written to a
    temporary name and renamed into place.
    """
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        Path(temporary).write_bytes(data)
        os.replace(temporary, path)
    else:
        fs.pipe_file(path, data)


def write_text(url: str, text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


def fetch_many(urls: list[str]) -> list[bytes | None]:
    """Fetch many small objects with many requests in flight; None where one is missing.

    gcsfs runs the requests of one `cat_ranges` call concurrently (a bucket answers one
    request in 20-50 ms, so one at a time would be a thousand times too slow).
    """
    if not urls:
        return []
    fs, _ = filesystem(urls[0])
    paths = [fs._strip_protocol(url) for url in urls]
    blobs: list[bytes | None] = []
    for start in range(0, len(paths), FETCH_CHUNK):
        chunk = paths[start : start + FETCH_CHUNK]
        for answer in fs.cat_ranges(chunk, None, None, on_error="return"):
            if isinstance(answer, FileNotFoundError):
                blobs.append(None)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                blobs.append(answer)
    return blobs


def list_files(url: str) -> list[str]:
    """Paths below `url`, relative to it; empty when it does not exist."""
    fs, root = filesystem(url)
    if not fs.exists(root):
        return []
    root = root.rstrip("/")
    return sorted(posixpath.relpath(path, root) for path in fs.find(root))


def remove_tree(url: str) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


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
        fs.get_file(f"{root.rstrip('/')}/{relative}", str(target))
        count += 1
    return count


class Mirror:
    """Uploads the new and changed files of a local folder to a URL, one file at a time."""

    def __init__(self, local_dir: Path, url: str) -> None:
        self.local_dir = local_dir
        self.url = url
        self._seen: dict[str, tuple[int, int]] = {}

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
            write_bytes(join(self.url, relative), path.read_bytes())
            self._seen[relative] = stamp
        if changed:
            log.debug("synced %d files to %s", len(changed), self.url)
        return len(changed)
