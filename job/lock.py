"""A lease against two jobs writing one --output: a `_LOCK` object beside the outputs.

`acquire` creates `_LOCK` only if it is absent (gs://: an `ifGenerationMatch=0`
precondition; a local folder: a hard link, which fails on an existing name; memory://: an
exclusive open) and reads it back: it must hold our token (a retried create whose first
try did land is ours). The job then renews the lease while it runs (every lease / 6,
30 s by default), each renewal conditional on the lock being the one it last wrote (gs://:
`ifGenerationMatch=<its generation>`; a local folder: compared under an flock of the
folder; memory://: under a process lock).

A lock held by another job is waited on: renewed while we wait, it is alive and the run is
refused (exit 4); not renewed for the lease time ($GENRE_JOB_LEASE_S, default 180 s, as
the holder recorded it), it is taken over with a warning, through the same precondition
(two jobs taking over one expired lease: one wins, the other waits on the winner's). No
pid or hostname is trusted: a container OOM-killed and restarted with a new hostname, or a
restarted pid 1, waits out its predecessor's lease. `--overwrite` takes a lease over at once.

A job whose lease was taken over (it could not renew it for the lease time, e.g. a long
bucket outage) learns so at its next renewal: `lost()` says so, and training stops
(callbacks.StopOnSignal) without writing more.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from job import storage
from job.errors import OutputError

log = logging.getLogger(__name__)

LOCK_NAME = "_LOCK"
LEASE_S = 180.0
RENEWALS_PER_LEASE = 6  # renewed every lease / 6: 30 s by default
_held: list[Lock] = []  # the leases this process holds
_memory_mutex = threading.Lock()


def lease_seconds() -> float:
    """How long a lease lasts without renewal ($GENRE_JOB_LEASE_S; tests shorten it)."""
    return float(os.environ.get("GENRE_JOB_LEASE_S", LEASE_S))


def check_held() -> None:
    """Raise OutputError when another job took over a lease this process holds."""
    for held in list(_held):
        if held.lost:
            raise OutputError(held.lost, "that job writes there now: this one stops")


class Store:
    """Conditional reads and writes of one small object. A version is what a conditional
    write compares: the generation on gs://, the bytes themselves elsewhere."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.path = storage.filesystem(url)
        self.gcs = "gcs" in type(self.fs).__name__.lower()
        self.local = storage.local_path(url) is not None

    def create(self, data: bytes) -> bool:
        try:
            storage.write_bytes(self.url, data, create=True)
            return True
        except FileExistsError:
            return False

    def read(self) -> tuple[bytes | None, object]:
        """(content, version), or (None, None) when absent."""
        if not self.gcs:
            try:
                data = storage.read_bytes(self.url)
            except FileNotFoundError:
                return None, None
            return data, data
        self.fs.invalidate_cache(self.path)
        try:
            info = storage.retrying("check", self.url, lambda: self.fs.info(self.path))
            data = storage.read_bytes(self.url)
        except FileNotFoundError:
            return None, None
        return data, str(info["generation"])

    def replace_if(self, data: bytes, version: object) -> object | None:
        """Write `data` if the object is still at `version`; the new version, or None."""
        if self.gcs:
            bucket, key, _ = self.fs.split_path(self.path)
            # A multipart upload, as gcsfs writes small objects (fake-gcs-server honours
            # preconditions on these, not on uploadType=media).
            body = b"".join(
                [
                    b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n",
                    json.dumps({"name": key}).encode(),
                    b"\n--==0==\nContent-Type: application/json\n\n",
                    data,
                    b"\n--==0==--",
                ]
            )
            try:
                written = storage.retrying(
                    "write",
                    self.url,
                    lambda: self.fs.call(
                        "POST",
                        f"{self.fs._location}/upload/storage/v1/b/{quote(bucket, safe='')}/o",
                        uploadType="multipart",
                        ifGenerationMatch=version,
                        headers={"Content-Type": 'multipart/related; boundary="==0=="'},
                        data=body,
                        json_out=True,
                    ),
                )
            except (FileExistsError, FileNotFoundError):  # 412: another generation
                return self._ours_anyway(data)  # unless our own write landed, answer lost
            self.fs.invalidate_cache(self.path)
            return str(written["generation"])
        with self._mutex():
            if self.read()[1] != version:
                return None
            storage.write_bytes(self.url, data)
            return data

    def _ours_anyway(self, data: bytes) -> object | None:
        current, version = self.read()
        return version if current == data else None

    def remove_if(self, version: object) -> bool:
        """Delete the object if it is still at `version` (or already gone)."""
        if self.gcs:
            bucket, key, _ = self.fs.split_path(self.path)
            try:
                storage.retrying(
                    "delete",
                    self.url,
                    # (fake-gcs-server ignores this precondition on deletes; GCS honours it)
                    lambda: self.fs.call(
                        "DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=version
                    ),
                )
            except FileNotFoundError:
                pass  # gone (or our delete landed and its answer was lost)
            except FileExistsError:  # 412
                return False
            self.fs.invalidate_cache(self.path)
            return True
        with self._mutex():
            current, current_version = self.read()
            if current is not None and current_version != version:
                return False
            storage.remove(self.url)
            return True

    @contextlib.contextmanager
    def _mutex(self):
        """Read-compare-write as one step: an flock of the folder (local), a process lock
        (memory://, which lives in this process)."""
        if not self.local:
            with _memory_mutex:
                yield
            return
        folder = Path(self.path).parent
        folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)


@dataclass
class Lock:
    """A lease we hold; renewed on a thread until `release`."""

    url: str  # the _LOCK object
    owner: dict
    store: Store
    version: object
    lease_s: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    lost: str | None = None

    def start(self) -> Lock:
        _held.append(self)
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / RENEWALS_PER_LEASE) and not self.lost:
            try:
                self.renew()
            except Exception as error:  # tried again next time; the lease outlives a few
                log.warning("%s: could not renew the lease: %s", self.url, error)

    def renew(self) -> None:
        with self._mutex:
            if self.lost or self._stop.is_set():
                return
            owner = {**self.owner, **_stamp(), "renewals": self.owner["renewals"] + 1}
            version = self.store.replace_if(_payload(owner), self.version)
            if version is None:
                current = _parse(self.store.read()[0])
                self.lost = f"{self.url}: the lease was taken over by {_describe(current)}"
                log.error("%s; this job stops writing there", self.lost)
                return
            self.owner, self.version = owner, version

    def release(self) -> None:
        """Stop renewing and remove the lock if it is still ours (a takeover is left alone)."""
        self.abandon()
        with self._mutex:
            if not self.lost and not self.store.remove_if(self.version):
                current = _parse(self.store.read()[0])
                log.warning("%s: not released, taken over by %s", self.url, _describe(current))

    def abandon(self) -> None:
        """Stop renewing, leaving the lock in place (it expires after the lease time)."""
        with self._mutex:
            self._stop.set()
        if self in _held:
            _held.remove(self)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=60)


def _stamp() -> dict:
    return {"renewed": datetime.now(UTC).isoformat(timespec="seconds"), "renewed_unix": time.time()}


def _payload(owner: dict) -> bytes:
    return json.dumps(owner, indent=2).encode()


def _parse(data: bytes | None) -> dict:
    try:
        parsed = json.loads(data or b"null")
    except (ValueError, UnicodeDecodeError):
        return {}  # unreadable (written by a tool?): a lease of unknown age
    return parsed if isinstance(parsed, dict) else {}


def _describe(owner: dict) -> str:
    return f"{owner.get('host', '?')} pid {owner.get('pid', '?')}"


def acquire(output_url: str, overwrite: bool = False, lease_s: float | None = None) -> Lock:
    """Take the lease of `output_url` (waiting out another job's, up to its lease time), or
    raise OutputError when that job renews it. With `overwrite` a lease is taken at once."""
    lease_s = lease_s or lease_seconds()
    url = storage.join(output_url, LOCK_NAME)
    store = Store(url)
    owner = {
        "host": socket.gethostname(),  # for people reading the lock; never trusted
        "pid": os.getpid(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        **_stamp(),
        "lease_s": lease_s,
        "renewals": 0,
        "token": uuid.uuid4().hex,
    }
    payload = _payload(owner)
    for _ in range(5):
        if store.create(payload):
            data, version = store.read()
            if data == payload:
                log.info("locked %s (lease %.0f s)", output_url, lease_s)
                return Lock(url, owner, store, version, lease_s).start()
        data, version = store.read()
        if data is None:
            continue  # released between our create and our read: try again
        if data == payload:  # our create landed; its answer was lost
            return Lock(url, owner, store, version, lease_s).start()
        current = _parse(data)
        if overwrite:
            why = "--overwrite"
        elif _wait_for_renewal(output_url, store, current, version, lease_s):
            raise OutputError(
                f"{output_url} is in use by {_describe(current)}: its lease was renewed "
                f"at {_parse(store.read()[0]).get('renewed', 'a moment ago')}",
                "wait for that job to end, or choose another --output",
            )
        else:
            why = "not renewed for its lease time"
        if store.read()[1] != version:
            continue  # released or changed while we waited: look again
        log.warning(
            "%s: taking over the lease of %s, last renewed %s (%s)",
            output_url,
            _describe(current),
            current.get("renewed", current.get("time", "at an unknown time")),
            why,
        )
        version = store.replace_if(payload, version)
        if version is not None:
            return Lock(url, owner, store, version, lease_s).start()
    raise OutputError(f"{output_url}: could not take the lock {url}", "retry the job")


def _wait_for_renewal(
    output_url: str, store: Store, current: dict, version: object, lease_s: float
) -> bool:
    """Wait until the holder's lease expires (False) or the lock changes (True if it was
    renewed or replaced; False when it is gone)."""
    holder_lease = float(current.get("lease_s", lease_s))
    renewed = float(current.get("renewed_unix", current.get("unix_time", 0)))
    # A clock ahead of ours counts as just renewed; ours decides how long we wait.
    remaining = holder_lease - min(max(time.time() - renewed, 0.0), holder_lease)
    if remaining > 0:
        log.info(
            "%s: in use by %s, lease renewed %s; waiting up to %.0f s for it to expire",
            output_url,
            _describe(current),
            current.get("renewed", "?"),
            remaining,
        )
    deadline = time.monotonic() + remaining
    poll = holder_lease / RENEWALS_PER_LEASE / 3
    while time.monotonic() < deadline:
        time.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))
        data, now = store.read()
        if now != version:
            return data is not None
    return False
