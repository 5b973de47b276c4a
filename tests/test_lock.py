"""job.lock on a local folder, memory:// and gs:// (fake-gcs-server, also behind a proxy
that resets connections after the server acted)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import uuid

import pytest
from support.faultproxy import FaultProxy

from job import lock, storage
from job.errors import OutputError


@pytest.fixture(params=["local", "memory", "gcs"])
def output(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "run")
    if request.param == "memory":
        return f"memory://locks-{uuid.uuid4().hex[:8]}/run"
    bucket = request.getfixturevalue("bucket")
    return f"{bucket}/runs/run"


def test_second_acquire_is_refused_until_released(output):
    first = lock.acquire(output, overwrite=False)
    owner = json.loads(storage.read_bytes(f"{output}/_LOCK"))
    assert {"host", "pid", "time"} <= set(owner)

    with pytest.raises(OutputError) as refused:
        lock.acquire(output, overwrite=False)

    assert str(refused.value) == (
        f"{output} is in use by {owner['host']} pid {owner['pid']} since {owner['time']}"
    )
    assert refused.value.hint == "wait, or pass --overwrite"
    assert refused.value.exit_code == 4
    first.release()
    assert not storage.exists(f"{output}/_LOCK")
    second = lock.acquire(output, overwrite=False)
    second.release()


def test_stale_lock_is_taken_over_with_a_warning(output, caplog):
    stale = {"host": "gone", "pid": 1, "time": "2020-01-01T00:00:00+00:00", "unix_time": 0}
    storage.write_bytes(f"{output}/_LOCK", json.dumps(stale).encode())

    with caplog.at_level(logging.WARNING, logger="job.lock"):
        taken = lock.acquire(output, overwrite=False)

    assert "taking over the stale lock of gone pid 1 from 2020-01-01" in caplog.text
    assert json.loads(storage.read_bytes(f"{output}/_LOCK"))["token"] == taken.owner["token"]
    taken.release()


def test_overwrite_takes_over_a_fresh_lock(output, caplog):
    held = lock.acquire(output, overwrite=False)
    with caplog.at_level(logging.WARNING, logger="job.lock"):
        taken = lock.acquire(output, overwrite=True)
    assert "fresh (--overwrite)" in caplog.text
    held.release()  # no longer ours: left alone
    assert json.loads(storage.read_bytes(f"{output}/_LOCK"))["token"] == taken.owner["token"]
    taken.release()
    assert not storage.exists(f"{output}/_LOCK")


def _try_lock(output: str, results, done) -> None:
    try:
        lock.acquire(output, overwrite=False)
        results.put("won")
        done.wait(60)  # hold the lock while running: a gone process's lock is free to take
    except OutputError:
        results.put("refused")


def test_only_one_of_many_racing_processes_wins(tmp_path):
    output = str(tmp_path / "run")
    context = multiprocessing.get_context("fork")
    results, done = context.Queue(), context.Event()
    racers = [context.Process(target=_try_lock, args=(output, results, done)) for _ in range(6)]
    for racer in racers:
        racer.start()
    outcomes = sorted(results.get(timeout=60) for _ in racers)
    done.set()
    for racer in racers:
        racer.join(60)
    assert outcomes == ["refused"] * 5 + ["won"]


def test_a_lock_left_by_a_killed_process_or_an_earlier_attempt_is_taken(tmp_path, monkeypatch):
    output = str(tmp_path / "run")
    context = multiprocessing.get_context("fork")
    results, done = context.Queue(), context.Event()
    done.set()  # the winner exits at once, without releasing: like a SIGKILL
    racer = context.Process(target=_try_lock, args=(output, results, done))
    racer.start()
    racer.join(60)
    assert results.get(timeout=5) == "won"

    rerun = lock.acquire(output, overwrite=False)  # same host, its pid is gone

    assert rerun.owner["pid"] == os.getpid()
    monkeypatch.setenv("GENRE_JOB_RUN_ID", "job-uid-1")
    rerun.owner.update(run="job-uid-1", host="another-pod", pid=1)
    storage.write_bytes(rerun.url, json.dumps(rerun.owner).encode())
    retry = lock.acquire(output, overwrite=False)  # a replacement pod of the same Job
    assert retry.owner["token"] != rerun.owner["token"]
    monkeypatch.setenv("GENRE_JOB_RUN_ID", "job-uid-2")
    with pytest.raises(OutputError, match="is in use by"):
        lock.acquire(output, overwrite=False)  # another Job


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
