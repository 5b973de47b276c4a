"""Multi-node training for real: two worker processes on 127.0.0.1, each with its own
TF_CONFIG, train under MultiWorkerMirroredStrategy (TensorFlow's collectives over gRPC);
only the chief writes the run."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pandas as pd
from conftest import ROOT, scaled, train_command
from runcheck import check_values


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_train_and_only_the_chief_writes(demo_dir, tmp_path):
    output = tmp_path / "run"
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(tmp_path)}
        processes.append(
            subprocess.Popen(
                train_command(
                    "cnn", str(demo_dir), str(output), "--epochs", "2", "--batch-size", "16"
                ),
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [process.communicate(timeout=scaled(600))[0] for process in processes]

    assert [p.returncode for p in processes] == [0, 0], "\n".join(logs)
    assert "MultiWorkerMirroredStrategy with 2 replicas" in logs[0], logs[0]
    assert "epoch 2/2" in logs[0] and "epoch 2/2" in logs[1]
    assert "worker finished" in logs[1] and "worker finished" not in logs[0]
    config = json.loads((output / "config.json").read_text())
    assert config["run"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert config["run"]["global_batch_size"] == 32
    assert pd.read_csv(output / "history.csv")["epoch"].tolist() == [0, 1]
    assert (output / "_SUCCESS").exists() and (output / "model.keras").exists()
    for side in ("train", "validation"):
        assert list((output / "tensorboard" / side).glob("events.out.tfevents*"))
    check_values(str(output), config)  # predictions, genres, scores: against the CSV
    assert f"worker done; the chief writes the outputs to {output}" in logs[1]
    # The worker's scratch folder (its own copies) and both stagings were removed.
    assert not list(tmp_path.glob("genre-job-*"))
