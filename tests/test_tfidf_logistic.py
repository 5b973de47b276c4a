"""--tfidf-logistic: a logistic regression over the unit-length TF-IDF rows, fitted to its
regularised optimum before training; its logits (a training film's from the folds that did
not see it) are the model's "Prior" input, added to the network's; the exported model
computes them with the regression fitted on every training film."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import train_args
from runcheck import check_values

from job.config import TrainConfig
from job.data import pipeline
from job.data.pipeline import NgramRows
from job.model import logistic
from job.model.networks import build_for, inference_model
from job.train.run import load_films


def rows_of(dense: np.ndarray) -> NgramRows:
    """NgramRows (as the run keeps TF-IDF rows) of a dense (films, width) matrix."""
    films, columns = np.nonzero(dense)
    return NgramRows(
        tf.RaggedTensor.from_value_rowids(columns, films, nrows=len(dense)),
        tf.RaggedTensor.from_value_rowids(dense[films, columns], films, nrows=len(dense)),
        dense.shape[1],
    )


def unit(dense: np.ndarray) -> np.ndarray:
    return dense / np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)


def test_the_fit_is_the_regularised_optimum():
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 40)) < 0.15) * rng.random((300, 40)).astype(np.float32)
    rule = rng.normal(size=(40, 3))
    labels = ((unit(dense) @ rule + rng.normal(scale=0.3, size=(300, 3))) > 0).astype(np.int8)
    train = np.arange(300) < 240

    kernel, bias, c = logistic.fit(rows_of(dense), labels, train, ~train)

    assert c in logistic.C_GRID
    # The objective's gradient, in numpy: mean cross-entropy over films and genres plus
    # |kernel|^2 / (2 C films genres), scikit-learn's objective scaled, is zero there.
    x, y = unit(dense[train]).astype(np.float64), labels[train]
    films, genres = y.shape
    error = 1 / (1 + np.exp(-(x @ kernel + bias))) - y
    kernel_gradient = x.T @ error / (films * genres) + kernel / (c * films * genres)
    bias_gradient = error.sum(0) / (films * genres)
    assert np.abs(kernel_gradient).max() < 1e-4 and np.abs(bias_gradient).max() < 1e-4
    assert np.abs(kernel).max() > 1  # (not the zeros it starts from)


def test_the_exported_model_adds_the_fitted_logits_to_the_networks():
    tokens = keras.layers.TextVectorization(vocabulary=["a", "b", "c"], output_sequence_length=64)
    tfidf = keras.layers.TextVectorization(
        vocabulary=["a", "b", "a b"], idf_weights=[1.0, 1.5, 2.0], output_mode="tf_idf"
    )
    config = TrainConfig(model="lstm", data="d", output="o", tfidf_logistic=True)
    model = build_for(config, 2, {"Tokens": tokens, "Ngrams": tfidf})
    assert model.get_layer("Prior").output.shape[1:] == (2,)  # an input: what the run feeds
    own = model.get_layer("OutputLogits")
    own.set_weights([np.zeros_like(w) for w in own.get_weights()])  # the network adds 0
    kernel, bias = np.arange(8, dtype=np.float32).reshape(4, 2) / 4, np.array([0.5, -1.0])
    fitted = logistic.prior_model(kernel, bias.astype(np.float32))
    assert fitted.trainable_weights == []

    exported = inference_model(model, {"Tokens": tokens, "Ngrams": tfidf, "Prior": fitted})
    overviews = tf.constant([["a b b"], ["zz a"]])
    got = exported(overviews, training=False).numpy()

    rows = tfidf(overviews[:, 0]).numpy()  # (TF-IDF of words and pairs, OOV first)
    expected = 1 / (1 + np.exp(-(unit(rows) @ kernel + bias)))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    plain = build_for(TrainConfig(model="lstm", data="d", output="o"), 2, {"Tokens": tokens,
                      "Ngrams": tfidf})  # fmt: skip
    assert "Prior" not in plain.input  # off by default


@pytest.mark.slow
def test_a_run_feeds_out_of_fold_logits_and_exports_the_full_fit(demo_dir, tmp_path, cli):
    run = tmp_path / "run"

    result = cli(*train_args("lstm", str(demo_dir), str(run), "--epochs", "2", "--tfidf-logistic"))

    assert result.exit_code == 0, result.output
    config = TrainConfig.from_json((run / "config.json").read_text())
    assert config.tfidf_logistic and config.run["tfidf_logistic_c"] in logistic.C_GRID
    check_values(str(run), json.loads((run / "config.json").read_text()))
    films, inputs, _, split = load_films(config)
    found = logistic.prior(inputs["Ngrams"], films.labels, split, config.seed)
    assert found.c == config.run["tfidf_logistic_c"]
    # A training film's logits: from a fit without it (they differ from the full fit's);
    # the other films': the full fit's, which the exported model holds.
    rows = pipeline.ngram_scatter(inputs["Ngrams"])(tf.range(len(films), dtype=tf.int64))
    full = found.model.predict(rows, verbose=0)
    train = split == "train"
    np.testing.assert_allclose(found.logits[~train], full[~train], atol=1e-4)
    assert np.abs(found.logits[train] - full[train]).mean() > 0.1
    exported = keras.saving.load_model(run / "model.keras")
    saved = next(layer for layer in exported.layers if layer.name == "tfidf_logistic")
    for got, want in zip(saved.get_weights(), found.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
