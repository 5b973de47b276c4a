"""Distributed training that learns: 2 replicas of MirroredStrategy on 2 logical CPUs,
and each model beats the label-prior baseline on the evaluation films of the demo data."""

from __future__ import annotations

import json

import pytest
from conftest import LSTM_FAST

pytestmark = pytest.mark.slow  # trains for several epochs

SETTINGS = {  # a few epochs at a learning rate that suits the tiny demo set
    "cnn": ["--epochs", "10", "--learning-rate", "1e-3", "--batch-size", "8"],
    "lstm": ["--epochs", "8", "--learning-rate", "3e-3", "--batch-size", "16", *LSTM_FAST],
}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "lstm"])
def test_two_replicas_learn_better_than_label_prior(model, demo_dir, tmp_path, cli):
    output = tmp_path / "run"

    result = cli(
        "train",
        "--model",
        model,
        "--data",
        demo_dir,
        "--output",
        output,
        "--cpu-replicas",
        "2",
        *SETTINGS[model],
    )

    assert result.exit_code == 0, result.output
    config = json.loads((output / "config.json").read_text())
    assert config["run"]["replicas"] == 2
    assert config["run"]["global_batch_size"] == 2 * int(SETTINGS[model][5])
    metrics = json.loads((output / "metrics.json").read_text())
    learned = metrics["tuned_thresholds"]["micro_f1"]
    assert learned > metrics["label_prior_micro_f1"] + 0.1, metrics
