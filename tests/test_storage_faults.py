"""Flaky and failing object storage, for real: the job runs as a subprocess against
fake-gcs-server behind tests/faultproxy.py, which answers 503/429 and resets connections
on a share of the requests (reading posters; writing checkpoints, logs, predictions).

Transient faults: the run finishes with the same outputs as a clean run, byte for byte.
A permanent outage mid-run: a one-line error, exit 1, and the last finished epoch's state
left in the bucket (what a rerun resumes from).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest
from conftest import ROOT, copy_tree, scaled
from support.faultproxy import FaultProxy

from job import storage

pytestmark = pytest.mark.slow  # trains as subprocesses through a faulty proxy

# Files of a run that must not depend on how many retries it took.
SAME = ["predictions.csv", "thresholds.json", "metrics.json", "history.csv"]
# config.json fields that name the run itself.
RUN_SPECIFIC = {"output"}


def run_job(data: str, output: str, host: str, epochs: int, **env: str):
    # (gcsfs's back-off between its tries shortened: tests/fastbackoff.py)
    command = [sys.executable, "-m", "fastbackoff", "train", "--model", "cnn", "--data", data]
    command += ["--output", output, "--epochs", str(epochs), "--batch-size", "8"]
    # Augmentation stays on: its flips come from a seeded per-batch stream, so a CPU run
    # with the same seed is reproducible whatever the storage did.
    environment = {
        **os.environ,
        "STORAGE_EMULATOR_HOST": host,
        "TF_DETERMINISTIC_OPS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT / "tests"),
        **env,
    }
    return subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=scaled(600)
    )


@pytest.fixture(scope="module")
def films(gcs_client, demo_dir) -> str:
    """The demo data in its own bucket, written straight to the server (no faults)."""
    name = f"films-{uuid.uuid4().hex[:12]}"
    gcs_client.create_bucket(name)
    copy_tree(demo_dir, f"gs://{name}/imdb")
    return f"gs://{name}"


def test_flaky_storage_gives_the_clean_run_outputs(films, gcs_server):
    data = f"{films}/imdb"
    clean = run_job(data, f"{films}/runs/clean", gcs_server, epochs=1)
    assert clean.returncode == 0, clean.stderr
    rates = {"503": 0.03, "429": 0.03, "reset": 0.03, "reset_after": 0.03}
    with FaultProxy(gcs_server, rates=rates, seed=11) as proxy:
        flaky = run_job(data, f"{films}/runs/flaky", proxy.url, epochs=1)

    assert flaky.returncode == 0, flaky.stderr
    assert "Traceback" not in flaky.stderr
    for fault in rates:  # every kind of fault happened, on reads and on writes
        assert proxy.counts[fault] > 0, proxy.counts
    assert proxy.counts["faults GET"] > 0 and proxy.counts["faults POST"] > 0, proxy.counts
    for name in SAME:
        assert storage.read_bytes(f"{films}/runs/flaky/{name}") == storage.read_bytes(
            f"{films}/runs/clean/{name}"
        ), name
    configs = [
        json.loads(storage.read_bytes(f"{films}/runs/{run}/config.json"))
        for run in ("clean", "flaky")
    ]
    for config in configs:
        for field in RUN_SPECIFIC:
            config.pop(field)
    assert configs[0] == configs[1]
    assert storage.exists(f"{films}/runs/flaky/_SUCCESS")


def test_storage_down_mid_run_stops_cleanly_and_keeps_the_last_epoch(films, gcs_server):
    output = f"{films}/runs/down"
    with FaultProxy(gcs_server) as proxy:
        # Healthy until the first epoch's resume state is in; 503 to everything after.
        proxy.down_after_write = "runs/down/backup/training_metadata.json"
        result = run_job(
            f"{films}/imdb", output, proxy.url, epochs=3, GENRE_JOB_STORAGE_RETRY_S="5"
        )

    assert proxy.mode == "down"
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: storage error: write {output}/"), last
    assert last.endswith("failed: HttpError: Service Unavailable, 503"), last
    # The bucket (read past the proxy) holds epoch 1, complete, and nothing of epoch 2.
    metadata = json.loads(storage.read_bytes(f"{output}/backup/training_metadata.json"))
    assert metadata["epoch"] == 1
    history = storage.read_bytes(f"{output}/history.csv").decode().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1"]  # epochs count from 1
    assert storage.exists(f"{output}/checkpoints/last.weights.h5")
    assert storage.exists(f"{output}/backup/latest.weights.h5")
    assert not storage.exists(f"{output}/_SUCCESS")


def test_posters_unreadable_mid_fetch_stop_the_run_with_nothing_written(films, gcs_server):
    """The bucket stops serving posters partway through the first epoch's fetch (its other
    objects still readable, writes still working): the run must fail, not train on the
    films it fetched before (a silent loss of the rest, as "no poster" drops)."""
    output = f"{films}/runs/posters-down"
    with FaultProxy(gcs_server) as proxy:
        proxy.fail_reads_after = ("%2FImages%2F", 10)  # (in the object name, URL-quoted)
        result = run_job(f"{films}/imdb", output, proxy.url, 1, GENRE_JOB_STORAGE_RETRY_S="2")

    assert proxy.counts["503"] > 0, proxy.counts
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    last = result.stderr.strip().splitlines()[-1]
    # (the objects of a chunk that failed are fetched again through gcsfs, then given up)
    expected = rf"Error: storage error: fetch \d+ objects from {films}/imdb/Images failed: "
    assert re.fullmatch(expected + "HttpError: Service Unavailable, 503", last), last
    assert not storage.exists(f"{output}/predictions.csv")
    assert not storage.exists(f"{output}/_SUCCESS")
