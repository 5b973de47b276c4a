"""A lock against two jobs writing one --output: a `_LOCK` object beside the outputs.

`acquire` writes `_LOCK` (owner host, pid, time, a random token) only if it is absent:
gs:// with an `ifGenerationMatch=0` precondition (the server refuses a second create),
a local folder with a hard link (fails on an existing name), memory:// with an exclusive
open. The lock is then read back and must hold our token (a retried create whose first
try did land is recognised as ours). A lock by someone else younger than `stale_after_s`
refuses the run; an older one (a job that died without releasing) is taken over with a
warning, and so is any lock with `overwrite`.

A lock left by a job that was killed is also ours to take at once when it was left by a
retry of the same run ($GENRE_JOB_RUN_ID, e.g. the Kubernetes Job's UID: a preempted pod's
replacement), or by a process on this host that no longer runs (a local rerun after kill).

Known limit: two jobs taking over the same stale lock at the same moment can both
succeed (the delete of the stale lock is not conditional); stale means hours old.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from job import storage
from job.errors import OutputError

log = logging.getLogger(__name__)

LOCK_NAME = "_LOCK"
STALE_AFTER_S = 6 * 3600


@dataclass
class Lock:
    url: str  # the _LOCK object
    owner: dict

    def release(self) -> None:
        """Remove the lock if it is still ours (a takeover by someone else is left alone)."""
        current = _read(self.url)
        if current is not None and current.get("token") != self.owner["token"]:
            log.warning("%s: not released, taken over by %s", self.url, _describe(current))
            return
        storage.remove(self.url)


def _describe(owner: dict) -> str:
    return f"{owner.get('host', '?')} pid {owner.get('pid', '?')}"


def _abandoned(current: dict) -> str | None:
    """Why a lock held by another process is ours to take now, if it is."""
    run = os.environ.get("GENRE_JOB_RUN_ID")
    if run and current.get("run") == run:
        return "left by an earlier attempt of this run"
    if current.get("host") == socket.gethostname() and isinstance(current.get("pid"), int):
        try:
            os.kill(current["pid"], 0)
        except ProcessLookupError:
            return "its process on this host is gone"
        except PermissionError:
            return None  # alive, someone else's
    return None


def _read(url: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(url))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}  # unreadable (half-written by a tool?): treated as a lock of unknown age


def acquire(output_url: str, overwrite: bool = False, stale_after_s: float = STALE_AFTER_S) -> Lock:
    """Take the lock of `output_url`, or raise OutputError when another job holds it.

    With `overwrite` (--overwrite) a fresh lock is taken over too, with a warning.
    """
    url = storage.join(output_url, LOCK_NAME)
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "unix_time": time.time(),
        "token": uuid.uuid4().hex,
        "run": os.environ.get("GENRE_JOB_RUN_ID", ""),
    }
    payload = json.dumps(owner, indent=2).encode()
    for _ in range(3):
        try:
            storage.write_bytes(url, payload, create=True)
        except FileExistsError:
            pass
        current = _read(url)
        if current is None:
            continue  # released between our create and our read: try again
        if current.get("token") == owner["token"]:
            log.info("locked %s (%s)", output_url, _describe(owner))
            return Lock(url, owner)
        age = time.time() - float(current.get("unix_time", 0))
        abandoned = _abandoned(current)
        if abandoned:
            log.warning(
                "%s: taking over the lock of %s (%s)", output_url, _describe(current), abandoned
            )
            storage.remove(url)
            continue
        if age < stale_after_s and not overwrite:
            raise OutputError(
                f"{output_url} is in use by {_describe(current)} "
                f"since {current.get('time', 'an unknown time')}",
                "wait, or pass --overwrite",
            )
        log.warning(
            "%s: taking over the %s lock of %s from %s (%.1f hours old)",
            output_url,
            "stale" if age >= stale_after_s else "fresh (--overwrite)",
            _describe(current),
            current.get("time", "an unknown time"),
            age / 3600,
        )
        storage.remove(url)
    raise OutputError(f"{output_url}: could not take the lock {url}", "retry the job")
