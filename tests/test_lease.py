"""The output lease through the CLI, with real processes: a running job's lease refuses a
second job (exit 4); after the running job is SIGKILLed, the same command waits out its
lease, takes it over (logged) and resumes. On gs:// (fake-gcs-server) only: the lease's
rules on a local folder and memory:// are tests/test_lock.py's, without training jobs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time

import pytest
from conftest import ROOT, copy_tree, scaled, train_command

from job import storage

pytestmark = pytest.mark.slow  # training jobs as subprocesses, one killed

LEASE_S = 4  # renewed every 0.67 s
EPOCHS = 8  # the first job is still training when the second one asks


def start(data: str, output: str) -> subprocess.Popen:
    command = train_command("cnn", data, output, "--epochs", str(EPOCHS), "--batch-size", "4")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GENRE_JOB_LEASE_S": str(LEASE_S)}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished_epochs(output: str) -> int:
    try:
        return json.loads(storage.read_bytes(f"{output}/backup/training_metadata.json"))["epoch"]
    except FileNotFoundError:
        return 0


def test_a_live_lease_refuses_and_a_killed_jobs_lease_is_taken_over(demo_dir, bucket):
    data, output = f"{bucket}/imdb", f"{bucket}/runs/cnn"
    copy_tree(demo_dir, data)

    first = start(data, output)
    deadline = time.monotonic() + scaled(300)
    while finished_epochs(output) < 1:  # training, with its lease in place
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
        time.sleep(0.2)
    holder = json.loads(storage.read_bytes(f"{output}/_LOCK"))
    assert holder["pid"] == first.pid and holder["lease_s"] == LEASE_S

    second = start(data, output)
    log, _ = second.communicate(timeout=scaled(300))

    assert first.poll() is None, "the first job ended before the second asked"
    assert second.returncode == 4, log
    assert re.fullmatch(
        rf"Error: {re.escape(output)} is in use by {re.escape(socket.gethostname())} pid "
        rf"{first.pid}: its lease was renewed at \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 "
        r"\(wait for that job to end, or choose another --output\)",
        log.splitlines()[-1],
    ), log
    assert "waiting up to" in log  # it waited for a renewal, not for hours
    assert json.loads(storage.read_bytes(f"{output}/_LOCK"))["token"] == holder["token"]

    first.kill()  # SIGKILL: no release; the lease stays until it expires
    first.communicate(timeout=scaled(60))
    killed = json.loads(storage.read_bytes(f"{output}/_LOCK"))
    assert killed["token"] == holder["token"]
    done = finished_epochs(output)

    third = start(data, output)
    log, _ = third.communicate(timeout=scaled(600))

    assert third.returncode == 0, log
    assert (
        f"{output}: taking over the lease of {socket.gethostname()} pid {first.pid}, last "
        f"renewed {killed['renewed']} (not renewed for its lease time)"
    ) in log
    assert f"{done} epochs done" in log  # resumed, not started again
    assert storage.exists(f"{output}/_SUCCESS")
    assert not storage.exists(f"{output}/_LOCK")  # released at the end
