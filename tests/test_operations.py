"""What an operator sees: one line per epoch, JSON lines for Cloud Logging, settings from
the environment (Vertex AI), exit codes."""

from __future__ import annotations

import json

import pytest
from conftest import copy_tree

from job import storage


@pytest.mark.slow
def test_json_logs_one_object_per_line_with_epoch_fields(demo_dir, tmp_path, cli):
    result = cli(
        "--log-format",
        "json",
        "train",
        "--model",
        "cnn",
        "--data",
        demo_dir,
        "--output",
        tmp_path / "run",
        "--epochs",
        "2",
    )

    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    ours = [e for e in entries if e["logger"].startswith("job")]
    assert ours and all({"severity", "message", "time"} <= set(e) for e in ours)
    epochs = [e for e in ours if e["message"].startswith("epoch ")]
    assert [e["epoch"] for e in epochs] == [1, 2]  # one line per epoch, with its figures
    assert all({"loss", "val_loss", "precision", "recall"} <= set(e) for e in epochs)
    assert any(e["message"].startswith("config {") for e in ours)  # resolved config first
    assert any("outputs written to" in e["message"] for e in ours)


@pytest.mark.slow
def test_output_defaults_to_vertex_ai_model_dir(demo_dir, tmp_path, cli, monkeypatch):
    data = f"memory://{tmp_path.name}/data"
    copy_tree(demo_dir, data)
    model_dir = f"memory://{tmp_path.name}/aip-model"
    monkeypatch.setenv("AIP_MODEL_DIR", model_dir)
    monkeypatch.setenv("GENRE_JOB_DATA", data)

    result = cli("train", "--model", "cnn", "--epochs", "1")

    assert result.exit_code == 0, result.output
    assert f"predictions: {model_dir}/predictions.csv" in result.stdout


def test_missing_output_is_a_usage_error(demo_dir, cli, monkeypatch):
    monkeypatch.delenv("AIP_MODEL_DIR", raising=False)

    result = cli("train", "--model", "cnn", "--data", demo_dir)

    assert result.exit_code == 2
    assert "Missing option '--output'" in result.stderr


@pytest.mark.slow
def test_vertex_ai_checkpoint_and_tensorboard_dirs(demo_dir, tmp_path, cli, monkeypatch):
    root = f"memory://{tmp_path.name}"
    data = f"{root}/data"
    copy_tree(demo_dir, data)
    monkeypatch.setenv("AIP_MODEL_DIR", f"{root}/model")
    monkeypatch.setenv("AIP_CHECKPOINT_DIR", f"{root}/checkpoints")
    monkeypatch.setenv("AIP_TENSORBOARD_LOG_DIR", f"{root}/logs")

    result = cli("train", "--model", "cnn", "--data", data, "--epochs", "1")

    assert result.exit_code == 0, result.output
    model_files = storage.list_files(f"{root}/model")
    assert "_SUCCESS" in model_files and "predictions.csv" in model_files
    assert not [
        f for f in model_files if f.split("/")[0] in ("checkpoints", "backup", "tensorboard")
    ]
    assert {"checkpoints/best.weights.h5", "backup/training_metadata.json"} <= set(
        storage.list_files(f"{root}/checkpoints")
    )
    logs = storage.list_files(f"{root}/logs")
    assert any(f.startswith("train/events") for f in logs)
    assert any(f.startswith("validation/events") for f in logs)
