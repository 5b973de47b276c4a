"""job.storage.lock's lease on a local folder, memory:// and gs:// (fake-gcs-server, also behind a
proxy that resets connections after the server acted)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import time
import uuid

import pytest
from conftest import scaled
from support.faultproxy import FaultProxy

from job import storage
from job.errors import OutputError
from job.storage import lock


@pytest.fixture(params=["local", "memory", "gcs"])
def output(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "run")
    if request.param == "memory":
        return f"memory://locks-{uuid.uuid4().hex[:8]}/run"
    bucket = request.getfixturevalue("bucket")
    return f"{bucket}/runs/run"


@pytest.fixture(autouse=True)
def short_lease(monkeypatch):
    """3 s leases, renewed every 0.5 s (the job: 180 s, every 30 s)."""
    monkeypatch.setenv("GENRE_JOB_LEASE_S", "3")


def test_second_acquire_is_refused_while_the_first_renews(output):
    first = lock.acquire(output, overwrite=False)
    owner = json.loads(storage.read_bytes(f"{output}/_LOCK"))
    assert {"host", "pid", "renewed", "lease_s", "token"} <= set(owner)
    started = time.monotonic()

    with pytest.raises(OutputError) as refused:
        lock.acquire(output, overwrite=False)

    assert time.monotonic() - started < 3  # refused at a renewal, not after the lease
    renewed = json.loads(storage.read_bytes(f"{output}/_LOCK"))
    assert renewed["token"] == owner["token"] and renewed["renewals"] >= 1
    assert re.fullmatch(
        rf"{re.escape(output)} is in use by {owner['host']} pid {owner['pid']}: its lease "
        r"was renewed at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00",
        str(refused.value),
    )
    assert refused.value.hint == "wait for that job to end, or choose another --output"
    assert refused.value.exit_code == 4
    first.release()
    assert not storage.exists(f"{output}/_LOCK")
    second = lock.acquire(output, overwrite=False)
    second.release()


def test_a_lease_not_renewed_is_taken_over_after_its_time(output, caplog):
    dead = lock.acquire(output, overwrite=False)
    dead.abandon()  # stops renewing, like a killed job
    started = time.monotonic()

    with caplog.at_level(logging.WARNING, logger="job.storage.lock"):
        taken = lock.acquire(output, overwrite=False)

    assert 1 < time.monotonic() - started < 6
    assert (
        f"{output}: taking over the lease of {dead.owner['host']} pid {dead.owner['pid']}, "
        f"last renewed {dead.owner['renewed']} (not renewed for its lease time)"
    ) in caplog.text
    assert json.loads(storage.read_bytes(f"{output}/_LOCK"))["token"] == taken.owner["token"]
    taken.release()


def test_an_old_or_unreadable_lock_is_taken_over_at_once(output, caplog):
    stale = {"host": "gone", "pid": 1, "time": "2020-01-01T00:00:00+00:00", "unix_time": 0}
    storage.write_bytes(f"{output}/_LOCK", json.dumps(stale).encode())

    with caplog.at_level(logging.WARNING, logger="job.storage.lock"):
        taken = lock.acquire(output, overwrite=False)

    assert "taking over the lease of gone pid 1, last renewed 2020-01-01" in caplog.text
    taken.release()
    storage.write_bytes(f"{output}/_LOCK", b"\x00 not json")
    lock.acquire(output, overwrite=False).release()


def test_overwrite_takes_over_a_live_lease_and_its_holder_stops(output, caplog):
    held = lock.acquire(output, overwrite=False)
    with caplog.at_level(logging.WARNING, logger="job.storage.lock"):
        taken = lock.acquire(output, overwrite=True)
    assert "(--overwrite)" in caplog.text
    deadline = time.monotonic() + 10
    while held.lost is None:  # its next renewal finds the lock changed
        assert time.monotonic() < deadline, "the holder did not notice"
        time.sleep(0.1)
    with pytest.raises(OutputError, match="the lease was taken over by"):
        lock.check_held()
    held.release()  # no longer ours: left alone
    lock.check_held()  # released: this process holds only the new lease
    assert json.loads(storage.read_bytes(f"{output}/_LOCK"))["token"] == taken.owner["token"]
    taken.release()
    assert not storage.exists(f"{output}/_LOCK")


def _try_lock(output: str, results, done) -> None:
    try:
        held = lock.acquire(output, overwrite=False)
        results.put("won")
        done.wait(60)  # hold (and renew) the lease meanwhile
        held.release()
    except OutputError:
        results.put("refused")


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_only_one_of_many_racing_processes_wins(where, tmp_path, request, monkeypatch):
    output = (
        str(tmp_path / "run") if where == "local" else f"{request.getfixturevalue('bucket')}/run"
    )
    context = multiprocessing.get_context("fork")
    results, done = context.Queue(), context.Event()
    racers = [context.Process(target=_try_lock, args=(output, results, done)) for _ in range(6)]
    for racer in racers:
        racer.start()
    outcomes = sorted(results.get(timeout=scaled(60)) for _ in racers)
    done.set()
    for racer in racers:
        racer.join(60)
    assert outcomes == ["refused"] * 5 + ["won"]


def test_gcs_create_is_conditional_even_when_the_answer_is_lost(bucket, gcs_server, monkeypatch):
    """A reset after the server created the lock: the retry meets 412, the read-back shows
    our token, so the lock is ours; and a second job still gets refused."""
    output = f"{bucket}/runs/run"
    with FaultProxy(gcs_server, rates={"reset_after": 1.0}, methods=("POST",)) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        proxy.rates = {"reset_after": 1.0}
        # the first POST is applied then reset; let later ones through
        original = proxy._pick

        def once(method: str):
            fault = original(method)
            proxy.rates = {}
            return fault

        proxy._pick = once
        held = lock.acquire(output, overwrite=False)
        assert proxy.counts["reset_after"] == 1
        with pytest.raises(OutputError, match="is in use by"):
            lock.acquire(output, overwrite=False)
        held.release()
