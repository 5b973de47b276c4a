"""Preemption and Ctrl-C: SIGTERM or SIGINT mid-run stops after the current step with exit
143 or 130 and the last finished epoch in the output (a local folder or a bucket); the same
command rerun resumes there, not from scratch, and exports the best epoch of the whole run."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest
from conftest import ROOT, copy_tree, scaled, train_command
from runcheck import assert_exports_the_best_epoch, check_run, read_csv

from job import storage

pytestmark = pytest.mark.slow  # trains, kills and resumes subprocesses

EPOCHS = 6
# val_loss on the demo films goes down for four epochs, then up: the best epoch is one
# finished before the signal, and the resumed epochs must not replace it.
SCHEDULE = [
    "--learning-rate", "0.01", "--constant-epochs", "1", "--lr-decay", "0.5",
    "--class-weight", "none", "--early-stopping", "0", "--batch-size", "16",
]  # fmt: skip
STOP_AFTER = 4  # epochs finished when the signal is sent
KILLED_EPOCHS = 4  # the SIGKILL test: three kills, then the last run


def start_training(data: str, output: str, *extra: str, epochs: int = EPOCHS) -> subprocess.Popen:
    command = train_command("cnn", data, output, "--epochs", str(epochs), *extra)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


class LineReader:
    """The output of a process, line by line, read in a thread: waiting for a line has a
    deadline even when the process goes silent."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self._queue.put(line)
        self._queue.put(None)  # end of output

    def wait_for(self, text: str, timeout: float) -> bool:
        """Whether a line holding `text` came within `timeout` seconds."""
        deadline = time.monotonic() + scaled(timeout)
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                return False
            self.lines.append(line)
            if text in line:
                return True
        return False

    def rest(self, timeout: float) -> str:
        """Everything until the output ends (the process exits)."""
        self._thread.join(scaled(timeout))
        assert not self._thread.is_alive(), "the process did not end in time"
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        return "".join(self.lines)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "signal_number", "exit_code"),
    # the README's codes: 143 after SIGTERM (preemption), 130 after SIGINT (Ctrl-C)
    [("gs", signal.SIGTERM, 143), ("local", signal.SIGINT, 130)],
    ids=["SIGTERM-gs", "SIGINT-local"],
)
def test_a_signal_then_rerun_resumes_and_exports_the_best_epoch(
    where, signal_number, exit_code, tmp_path, demo_dir, request, cli
):
    """Stop after the step, sync, one line; the rerun resumes in a local folder or a bucket."""
    root = str(tmp_path) if where == "local" else request.getfixturevalue("bucket")
    data, output = f"{root}/data", f"{root}/run"
    copy_tree(demo_dir, data)

    first = start_training(data, output, *SCHEDULE)
    reader = LineReader(first)
    assert reader.wait_for(f"epoch {STOP_AFTER}/{EPOCHS}", 300), "".join(reader.lines)
    first.send_signal(signal_number)
    log = reader.rest(300)
    first.wait(scaled(60))

    assert first.returncode == exit_code, log
    assert not storage.exists(f"{output}/_SUCCESS")
    metadata = json.loads(storage.read_bytes(f"{output}/backup/training_metadata.json"))
    done = metadata["epoch"]
    assert STOP_AFTER <= done < EPOCHS
    assert log.splitlines()[-1] == (
        f"stopped after epoch {done} of {EPOCHS}; rerun the same command to resume"
    )
    assert "Aborted!" not in log and "Traceback" not in log
    history = read_csv(f"{output}/history.csv")
    assert history["epoch"].tolist() == list(range(1, done + 1))
    best_before = history["val_loss"].min()
    best_weights = storage.read_bytes(f"{output}/checkpoints/best.weights.h5")

    second = start_training(data, output, *SCHEDULE)
    log, _ = second.communicate(timeout=scaled(600))

    assert second.returncode == 0, log
    assert f"{done} epochs done" in log
    assert f"epoch {done}/{EPOCHS}" not in log  # finished epochs are not trained again
    assert f"epoch {EPOCHS}/{EPOCHS}" in log
    check_run(output, "cnn", epochs=EPOCHS)
    # The best epoch came before the signal; the resumed epochs did not replace it.
    assert read_csv(f"{output}/history.csv")["val_loss"].min() == best_before
    # No resumed epoch was better, so none replaced the best checkpoint.
    assert storage.read_bytes(f"{output}/checkpoints/best.weights.h5") == best_weights
    predicted = f"{output}-all.csv"
    assert (
        cli("predict", "--model-dir", output, "--data", data, "--output", predicted).exit_code == 0
    )
    assert_exports_the_best_epoch(output, predicted)


def finished_epochs(output) -> int:
    metadata = output / "backup" / "training_metadata.json"
    try:
        return json.loads(metadata.read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_three_sigkills_lose_nothing(demo_dir, tmp_path, monkeypatch):
    """SIGKILL gives no chance to clean up: what is in the output must be enough."""
    # Each rerun waits out the killed job's lease: 4 s (as test_lease's), not the suite's 20.
    monkeypatch.setenv("GENRE_JOB_LEASE_S", "4")
    data, output = str(tmp_path / "data"), tmp_path / "run"
    copy_tree(demo_dir, data)

    for kill in range(1, 4):
        process = start_training(data, str(output), "--batch-size", "16", epochs=KILLED_EPOCHS)
        deadline = time.monotonic() + scaled(300)
        while finished_epochs(output) < kill and process.poll() is None:
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)  # (polling a file, with the deadline above)
        process.kill()  # mid-way through the next epoch, or while syncing it
        process.communicate(timeout=scaled(60))
        assert finished_epochs(output) >= kill
        assert not (output / "_SUCCESS").exists()

    last = start_training(data, str(output), "--batch-size", "16", epochs=KILLED_EPOCHS)
    log, _ = last.communicate(timeout=scaled(600))

    assert last.returncode == 0, log
    assert json.loads((output / "config.json").read_text())["epochs"] == KILLED_EPOCHS
    check_run(str(output), "cnn", epochs=KILLED_EPOCHS)
