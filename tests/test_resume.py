"""Preemption and Ctrl-C: SIGTERM or SIGINT mid-run stops after the current step with exit
143 or 130 and the last finished epoch in the output; the same command rerun resumes
there, not from scratch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
from conftest import ROOT, copy_tree, train_command

from job.errors import TrainingInterrupted

pytestmark = pytest.mark.slow  # trains, kills and resumes subprocesses

EPOCHS = 4


def start_training(data: str, output: str) -> subprocess.Popen:
    command = train_command("cnn", data, output, "--epochs", str(EPOCHS), "--batch-size", "4")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 300) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if text in line or time.monotonic() > deadline:
            return lines
    return lines


@pytest.mark.parametrize(
    ("signal_number", "exit_code"),
    [(signal.SIGTERM, TrainingInterrupted.exit_code), (signal.SIGINT, 130)],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_then_rerun_resumes_from_last_finished_epoch(
    signal_number, exit_code, demo_dir, tmp_path
):
    """SIGTERM (preemption) and SIGINT (Ctrl-C) alike: stop after the step, sync, one line."""
    data, output = str(tmp_path / "data"), tmp_path / "run"
    copy_tree(demo_dir, data)

    first = start_training(data, str(output))
    seen = wait_for_line(first, f"epoch 1/{EPOCHS}")
    assert any(f"epoch 1/{EPOCHS}" in line for line in seen), "".join(seen)
    first.send_signal(signal_number)
    rest, _ = first.communicate(timeout=300)

    assert first.returncode == exit_code, "".join(seen) + rest
    assert not (output / "_SUCCESS").exists()
    done = json.loads((output / "backup" / "training_metadata.json").read_text())["epoch"]
    assert 1 <= done < EPOCHS
    assert rest.splitlines()[-1] == (
        f"stopped after epoch {done} of {EPOCHS}; rerun the same command to resume"
    )
    assert "Aborted!" not in rest and "Traceback" not in rest
    assert pd.read_csv(output / "history.csv")["epoch"].tolist() == list(range(1, done + 1))

    second = start_training(data, str(output))
    log, _ = second.communicate(timeout=600)

    assert second.returncode == 0, log
    assert f"{done} epochs done" in log
    assert f"epoch {done}/{EPOCHS}" not in log  # finished epochs are not trained again
    assert f"epoch {EPOCHS}/{EPOCHS}" in log
    assert pd.read_csv(output / "history.csv")["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert (output / "_SUCCESS").exists()


def finished_epochs(output) -> int:
    metadata = output / "backup" / "training_metadata.json"
    try:
        return json.loads(metadata.read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_three_sigkills_lose_nothing(demo_dir, tmp_path):
    """SIGKILL gives no chance to clean up: what is in the output must be enough."""
    data, output = str(tmp_path / "data"), tmp_path / "run"
    copy_tree(demo_dir, data)

    for kill in range(1, 4):
        process = start_training(data, str(output))
        deadline = time.monotonic() + 300
        while finished_epochs(output) < kill and process.poll() is None:
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)
        process.kill()  # mid-way through the next epoch, or while syncing it
        process.communicate(timeout=60)
        assert finished_epochs(output) >= kill
        assert not (output / "_SUCCESS").exists()

    last = start_training(data, str(output))
    log, _ = last.communicate(timeout=600)

    assert last.returncode == 0, log
    assert pd.read_csv(output / "history.csv")["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert (output / "_SUCCESS").exists()
    assert json.loads((output / "config.json").read_text())["epochs"] == EPOCHS
    predictions = pd.read_csv(output / "predictions.csv")
    assert (
        len(predictions)
        == json.loads((output / "config.json").read_text())["run"]["split_sizes"]["evaluation"]
    )
