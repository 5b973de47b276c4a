"""Multi-node training for real: two worker processes on 127.0.0.1, each with its own
TF_CONFIG, train under MultiWorkerMirroredStrategy (TensorFlow's collectives over gRPC);
a SIGTERM to one stops both, the rerun resumes, and only the chief writes the run."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, copy_tree, scaled, train_command
from runcheck import check_values

from job.errors import SetupError, TrainingInterrupted
from job.train import multiworker


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


# --- JobSet: TF_CONFIG from the pod's environment -------------------------------------

JOBSET_ENV = {
    "JOBSET_NAME": "genre-train-multinode-r1",
    "REPLICATED_JOB_NAME": "worker",
    "JOB_INDEX": "1",
    "REPLICATED_JOB_REPLICAS": "3",
    "JOB_COMPLETION_INDEX": "0",
}


def test_tf_config_from_jobset_names_every_pod_by_its_stable_hostname():
    spec = multiworker.tf_config_from_jobset(JOBSET_ENV)
    assert spec == {
        "cluster": {
            "worker": [
                f"genre-train-multinode-r1-worker-{i}-0.genre-train-multinode-r1:2222"
                for i in range(3)
            ]
        },
        "task": {"type": "worker", "index": 1},
    }
    custom = {**JOBSET_ENV, "JOBSET_SUBDOMAIN": "net", "GENRE_JOB_WORKER_PORT": "5000"}
    assert multiworker.tf_config_from_jobset(custom)["cluster"]["worker"][0] == (
        "genre-train-multinode-r1-worker-0-0.net:5000"
    )
    assert multiworker.tf_config_from_jobset({"JOB_COMPLETION_INDEX": "0"}) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"JOB_INDEX": ""}, "JobSet environment incomplete: JOB_INDEX not set"),
        ({"REPLICATED_JOB_REPLICAS": "two"}, "JobSet environment: not a number"),
        ({"JOB_INDEX": "3"}, "JobSet environment: JOB_INDEX 3 not below 3 replicas"),
        ({"JOB_COMPLETION_INDEX": "1"}, "JobSet pod with completion index 1"),
    ],
)
def test_bad_jobset_environment_is_a_usage_error(change, message):
    with pytest.raises(SetupError) as caught:
        multiworker.tf_config_from_jobset({**JOBSET_ENV, **change})
    assert str(caught.value).startswith(message)
    assert caught.value.exit_code == 2


def test_jobset_environment_sets_tf_config_unless_already_set(monkeypatch):
    for key, value in JOBSET_ENV.items():
        monkeypatch.setenv(key, value)
    # Empty counts as unset; unlike delenv of an absent variable, monkeypatch then also
    # removes the TF_CONFIG the function exports (it would reach later tests' subprocesses).
    monkeypatch.setenv("TF_CONFIG", "")
    multiworker.set_tf_config_from_jobset()
    assert json.loads(os.environ["TF_CONFIG"])["task"] == {"type": "worker", "index": 1}
    assert not multiworker.is_chief()  # worker 0 is the chief
    own = json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    )
    monkeypatch.setenv("TF_CONFIG", own)
    multiworker.set_tf_config_from_jobset()
    assert os.environ["TF_CONFIG"] == own and multiworker.is_chief()


def test_no_tf_config_leaks_out_of_the_test_above():
    assert "TF_CONFIG" not in os.environ


# --- a SIGTERM to one worker stops both after the same step ---------------------------

EPOCHS = 3  # SIGTERM once epoch 1 is logged: the stop falls in epoch 2 or 3, the rerun ends it
STOP_RE = re.compile(r"after (training|validation) step (\d+) of epoch (\d+)")


def start_workers(data: str, output: Path, tmp_path: Path) -> list[subprocess.Popen]:
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(tf_config),
            "TMPDIR": str(tmp_path),
            "PYTHONUNBUFFERED": "1",
        }
        command = train_command(
            "cnn", data, str(output), "--epochs", str(EPOCHS), "--batch-size", "4"
        )
        processes.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return processes


class Output:
    """Drains a process's output in a thread (a full pipe would stall the process)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while not any(text in line for line in self.lines):
            assert self.reader.is_alive(), f"ended without '{text}':\n{self.text()}"
            assert time.monotonic() < deadline, f"no '{text}' in time:\n{self.text()}"
            time.sleep(0.05)

    def finish(self, timeout: float = 600) -> str:
        self.process.wait(timeout=scaled(timeout))
        self.reader.join(timeout=scaled(60))
        return self.text()

    def text(self) -> str:
        return "".join(self.lines)


@pytest.mark.slow  # two training processes
def test_sigterm_stops_both_workers_and_the_rerun_is_the_chiefs_alone(demo_dir, tmp_path):
    data, output = str(tmp_path / "data"), tmp_path / "run"
    copy_tree(demo_dir, data)
    outputs = [Output(p) for p in start_workers(data, output, tmp_path)]
    outputs[1].wait_for(f"epoch 1/{EPOCHS}")
    outputs[1].process.send_signal(signal.SIGTERM)  # worker 1: not the chief
    logs = [o.finish() for o in outputs]

    codes = [o.process.returncode for o in outputs]
    assert codes == [TrainingInterrupted.exit_code] * 2, "\n".join(logs)
    # One line each, as a single-node run prints it (not an error: the rerun resumes).
    where = r" after (training|validation) step \d+ of epoch \d+; rerun the same command to resume$"
    others = r"^stopped with the other workers \(one of them received SIGTERM\)"
    assert re.search(others + where, logs[0], re.M), logs[0]
    assert re.search(r"^stopped by signal 15" + where, logs[1], re.M), logs[1]
    stops = [STOP_RE.findall(log) for log in logs]
    assert len(stops[0]) == 1 and stops[0] == stops[1], stops  # the same step on both
    ((_, _, epoch),) = stops[0]
    # The backup of the last finished epoch is in the run folder; nothing after it.
    done = json.loads((output / "backup" / "training_metadata.json").read_text())["epoch"]
    assert done == int(epoch) - 1 >= 1
    assert pd.read_csv(output / "history.csv")["epoch"].tolist() == list(range(1, done + 1))
    assert not (output / "_SUCCESS").exists() and not (output / "_LOCK").exists()

    outputs = [Output(p) for p in start_workers(data, output, tmp_path)]
    logs = [o.finish() for o in outputs]

    assert [o.process.returncode for o in outputs] == [0, 0], "\n".join(logs)
    for log in logs:
        assert f"{done} epochs done" in log
        assert f"epoch {done}/{EPOCHS}" not in log  # finished epochs are not trained again
        assert f"epoch {EPOCHS}/{EPOCHS}" in log
    assert pd.read_csv(output / "history.csv")["epoch"].tolist() == list(range(1, EPOCHS + 1))
    # The finished run is the chief's alone: the other worker trained, wrote nothing.
    assert "MultiWorkerMirroredStrategy with 2 replicas" in logs[0], logs[0]
    assert "worker finished" in logs[1] and "worker finished" not in logs[0]
    assert f"worker done; the chief writes the outputs to {output}" in logs[1]
    config = json.loads((output / "config.json").read_text())
    assert config["run"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert config["run"]["global_batch_size"] == 8
    assert (output / "_SUCCESS").exists() and (output / "model.keras").exists()
    for side in ("train", "validation"):
        assert list((output / "tensorboard" / side).glob("events.out.tfevents*"))
    check_values(str(output), config)  # predictions, genres, scores: against the CSV
    # The worker's scratch folder (its own copies) and every staging were removed.
    assert not list(tmp_path.glob("genre-job-*"))
