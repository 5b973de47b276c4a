"""The job's own retry layer (job/storage.py `retrying`) on a real gs:// path: the test
server behind tests/faultproxy.py. gcsfs retries each request 6 times itself; what it
gives up on reaches the job's layer, which retries the whole operation."""

from __future__ import annotations

import logging
import time

import fastbackoff
import gcsfs
import gcsfs.retry
import pytest
from support.faultproxy import FaultProxy

from job import storage

GCSFS_TRIES = 6  # gcsfs.retry.retry_request's tries per request


@pytest.fixture
def proxied(gcs_server, bucket, monkeypatch):
    """A FaultProxy in front of the test server as the job's endpoint, with gcsfs's
    back-off 100x shorter (its 1-16 s sleeps between tries only make the test wait)."""
    fastbackoff.install(monkeypatch)
    monkeypatch.setattr(storage, "FIRST_DELAY_S", 0.05)
    with FaultProxy(gcs_server) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        gcsfs.GCSFileSystem.clear_instance_cache()  # one built for the server itself
        yield proxy, bucket
        gcsfs.GCSFileSystem.clear_instance_cache()


def retry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]


def test_three_failed_attempts_then_success(proxied, caplog):
    proxy, bucket = proxied
    url = f"{bucket}/answer.txt"
    storage.write_text(url, "forty-two")
    # Each of the job's first three attempts meets 503 on every one of gcsfs's tries.
    proxy.fail_first = ("answer.txt", 3 * GCSFS_TRIES)
    with caplog.at_level(logging.WARNING, logger="job.storage"):
        assert storage.read_bytes(url) == b"forty-two"

    assert proxy.counts["503"] == 3 * GCSFS_TRIES
    lines = retry_lines(caplog)
    assert [line.split("; ")[-1].split(" in ")[0] for line in lines] == [
        "retry 1 of 4",
        "retry 2 of 4",
        "retry 3 of 4",
    ]
    assert lines[0].startswith(f"storage: read {url} failed (HttpError: Service Unavailable, 503)")


def test_forbidden_is_not_retried(proxied, caplog):
    proxy, bucket = proxied
    proxy.forbid_writes = "locked/"
    url = f"{bucket}/locked/model.keras"
    with caplog.at_level(logging.WARNING, logger="job.storage"):
        with pytest.raises(PermissionError) as raised:
            storage.write_bytes(url, b"weights")

    assert proxy.counts["403"] == 1  # one request: neither gcsfs nor the job tried again
    assert retry_lines(caplog) == []
    assert str(raised.value).startswith(f"write {url}: OSError: Forbidden: ")


def test_retries_stop_at_the_time_budget(proxied, monkeypatch, caplog):
    proxy, bucket = proxied
    monkeypatch.setattr(storage, "FIRST_DELAY_S", 1.0)  # 1, 2, 4, 8 s (x0.5-1.5): 15 s
    monkeypatch.setenv("GENRE_JOB_STORAGE_RETRY_S", "2")
    proxy.mode = "down"
    url = f"{bucket}/gone.txt"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="job.storage"):
        with pytest.raises(storage.StorageError) as raised:
            storage.read_bytes(url)
    elapsed = time.monotonic() - started

    # A retry is only started when its delay ends inside the budget.
    assert elapsed < 2 + 2 * GCSFS_TRIES * 0.5, elapsed
    assert 1 <= len(retry_lines(caplog)) <= 2
    assert str(raised.value) == f"read {url} failed: HttpError: Service Unavailable, 503"


def test_a_stalled_read_times_out_and_is_retried(proxied, monkeypatch):
    """GENRE_JOB_STORAGE_READ_TIMEOUT_S bounds a read that stalls: the stalled request
    fails after 1 s and the next one is answered, where it would wait out the stall."""
    proxy, bucket = proxied
    url = f"{bucket}/slow.txt"
    storage.write_text(url, "eventually")
    monkeypatch.setenv("GENRE_JOB_STORAGE_READ_TIMEOUT_S", "1")
    gcsfs.GCSFileSystem.clear_instance_cache()  # the timeout is set when one is built
    proxy.stall = ("slow.txt", 1, 60.0)
    started = time.monotonic()

    assert storage.read_bytes(url) == b"eventually"

    assert proxy.counts["stall"] == 1
    assert time.monotonic() - started < 15
