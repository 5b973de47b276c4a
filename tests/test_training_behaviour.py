"""What training promises, checked from its outputs against independent arithmetic: the
exported model is the best checkpoint by val_loss (with and without early stopping), early
stopping stops where its rule says, the learning rate follows the recipe's formula, and
`--embedding-init lsa` puts the LSA vectors into the Embedding layer."""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import LSTM_FAST
from runcheck import assert_exports_the_best_epoch, catalogue_truth, read_csv

from job.cli import main
from job.model.embeddings import lsa_vectors

pytestmark = pytest.mark.slow  # 6 + 6 + 1 epochs

# A high rate, one constant epoch, then halving-ish decay: val_loss goes down, then bounces.
LEARNING_RATE, CONSTANT_EPOCHS, DECAY, EPOCHS = 0.01, 1, 0.5, 6
SCHEDULE = [
    "--learning-rate", str(LEARNING_RATE), "--constant-epochs", str(CONSTANT_EPOCHS),
    "--lr-decay", str(DECAY), "--class-weight", "none", "--batch-size", "16",
]  # fmt: skip


def invoke(*args) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def runs(demo_dir, tmp_path_factory) -> dict:
    """Two cnn runs on the demo films, early stopping off and at patience 1, each with
    its exported model's predictions for every film."""
    folder = tmp_path_factory.mktemp("behaviour")
    found = {}
    for name, patience in (("all-epochs", "0"), ("early-stop", "1")):
        output, predicted = folder / name, folder / f"{name}.csv"
        invoke("train", "--model", "cnn", "--data", demo_dir, "--output", output,
               "--epochs", EPOCHS, "--early-stopping", patience, *SCHEDULE)  # fmt: skip
        invoke("predict", "--model-dir", output, "--data", demo_dir, "--output", predicted)
        found[name] = (str(output), str(predicted))
    return found


def test_without_early_stopping_every_epoch_runs_and_the_best_is_exported(runs):
    output, predicted = runs["all-epochs"]
    assert read_csv(f"{output}/history.csv")["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert_exports_the_best_epoch(output, predicted)


def test_early_stopping_stops_after_patience_epochs_and_exports_the_best(runs):
    output, predicted = runs["early-stop"]
    losses = read_csv(f"{output}/history.csv")["val_loss"].tolist()
    assert len(losses) < EPOCHS  # it stopped
    # patience 1: every epoch but the last improved on the one before; the last did not
    assert all(b < a for a, b in zip(losses[:-2], losses[1:-1], strict=True)), losses
    assert losses[-1] >= losses[-2], losses
    assert_exports_the_best_epoch(output, predicted)


def test_learning_rate_follows_the_recipe_formula(runs):
    history = read_csv(f"{runs['all-epochs'][0]}/history.csv")
    # constant for CONSTANT_EPOCHS epochs, then x exp(-DECAY) per epoch
    expected = [
        LEARNING_RATE * math.exp(-DECAY * max(0, epoch - CONSTANT_EPOCHS + 1))
        for epoch in range(EPOCHS)
    ]
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-6)


def nested_layers(model: keras.Model) -> list:
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found += nested_layers(layer)
    return found


def test_lsa_vectors_reach_the_embedding(demo_dir, tmp_path, cli):
    """With a learning rate of 1e-9 training leaves the weights where they started: the
    exported Embedding holds the LSA vectors of the training overviews."""
    output = tmp_path / "run"
    result = cli(
        "train", "--model", "lstm", "--data", demo_dir, "--output", output, *LSTM_FAST,
        "--epochs", "1", "--embedding-init", "lsa", "--learning-rate", "1e-9",
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    model = keras.models.load_model(output / "model.keras")
    layers = {layer.name: layer for layer in nested_layers(model)}
    embedding, vectorizer = layers["Embedding"], layers["Vectorizer"]
    config = pd.read_json(output / "config.json", typ="series")
    csv = read_csv(f"{demo_dir}/IMDB_overview_genres.csv")
    train = catalogue_truth(config)["split"].to_numpy() == "train"
    tokens = vectorizer(csv.loc[train, "Overview"].str.strip().to_numpy()).numpy()
    expected = lsa_vectors(tokens, embedding.input_dim, embedding.output_dim)
    weights = embedding.embeddings.numpy()
    assert np.abs(expected).max() > 0.01
    np.testing.assert_allclose(weights, expected, atol=1e-6)
