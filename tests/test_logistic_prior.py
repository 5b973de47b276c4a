"""--tfidf-logistic / --colour-logistic: a logistic regression over the unit-length TF-IDF
rows and/or the posters' scaled colour histograms, fitted to its regularised optimum before
training; its logits (a training film's from the folds that did not see it) are the model's
"Prior" input, added to the network's; the exported model computes them with the regression
fitted on every training film."""

from __future__ import annotations

import json
import logging

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


@pytest.mark.parametrize("reads", ["ngrams", "colours", "both"])
def test_the_fit_is_the_regularised_optimum(reads):
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 40)) < 0.15) * rng.random((300, 40)).astype(np.float32)
    colours = rng.random((300, 12)).astype(np.float32)
    standard = (colours.mean(0), np.full(12, 3.0, np.float32))
    # Column 0 is the vectorizer's out-of-vocabulary count, which the regression ignores.
    ngrams = unit(dense[:, 1:]) * logistic.NGRAM_SCALE
    scaled_colours = (colours - standard[0]) * standard[1]
    x = {
        "ngrams": ngrams,
        "colours": scaled_colours,
        "both": np.hstack([ngrams, scaled_colours]),
    }[reads].astype(np.float64)
    labels = (x @ rng.normal(size=(x.shape[1], 3)) + rng.normal(scale=0.3, size=(300, 3))) > 0
    labels = labels.astype(np.int8)
    train = np.arange(300) < 240
    features = logistic.Features(
        rows_of(dense) if reads != "colours" else None, colours if reads != "ngrams" else None
    )

    kernels, bias, c = logistic.fit(features, labels, train, ~train, standard)

    assert c in logistic.C_GRID
    kernel, bias = np.concatenate([k.numpy() for k in kernels]), bias.numpy()
    assert kernel.shape == (x.shape[1], 3)
    # The objective's gradient, in numpy: mean cross-entropy over films and genres plus
    # |kernel|^2 / (2 C films genres), scikit-learn's objective scaled, is zero there.
    x, y = x[train], labels[train]
    films, genres = y.shape
    error = 1 / (1 + np.exp(-(x @ kernel + bias))) - y
    kernel_gradient = x.T @ error / (films * genres) + kernel / (c * films * genres)
    bias_gradient = error.sum(0) / (films * genres)
    assert np.abs(kernel_gradient).max() < 1e-4 and np.abs(bias_gradient).max() < 1e-4
    assert np.abs(kernel).max() > 1  # (not the zeros it starts from)


def test_the_exported_lstm_adds_the_fitted_logits_to_the_networks():
    tokens = keras.layers.TextVectorization(vocabulary=["a", "b", "c"], output_sequence_length=64)
    tfidf = keras.layers.TextVectorization(
        vocabulary=["a", "b", "a b"], idf_weights=[1.0, 1.5, 2.0], output_mode="tf_idf"
    )
    config = TrainConfig(model="lstm", data="d", output="o", tfidf_logistic=True)
    model = build_for(config, 2, {"Tokens": tokens, "Ngrams": tfidf})
    assert model.get_layer("Prior").output.shape[1:] == (2,)  # an input: what the run feeds
    own = model.get_layer("OutputLogits")
    own.set_weights([np.zeros_like(w) for w in own.get_weights()])  # the network adds 0
    kernel, bias = np.arange(6, dtype=np.float32).reshape(3, 2) / 4, np.array([0.5, -1.0])
    fitted = logistic.prior_model([kernel], bias.astype(np.float32), True, None, 64)
    assert fitted.trainable_weights == []

    exported = inference_model(model, {"Tokens": tokens, "Ngrams": tfidf, "Prior": fitted})
    overviews = tf.constant([["a b b"], ["zz a"]])
    got = exported(overviews, training=False).numpy()

    rows = tfidf(overviews[:, 0]).numpy()  # (TF-IDF of words and pairs, OOV first)
    known = unit(rows[:, 1:]) * logistic.NGRAM_SCALE  # (the OOV count left out)
    expected = 1 / (1 + np.exp(-(known @ kernel + bias)))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    off = TrainConfig(model="lstm", data="d", output="o", tfidf_logistic=False)
    assert "Prior" not in build_for(off, 2, {"Tokens": tokens, "Ngrams": tfidf}).input


def test_the_exported_cnn_adds_the_colour_regressions_logits():
    config = TrainConfig(model="cnn", data="d", output="o", colour_logistic=True)
    model = build_for(config, 2, None)
    assert set(model.input) == {"Poster", "Prior"}
    own = model.get_layer("OutputLogits")
    own.set_weights([np.zeros_like(w) for w in own.get_weights()])  # the network adds 0
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(512, 2)).astype(np.float32), np.array([0.5, -1.0], np.float32)
    mean, scale = rng.random(512).astype(np.float32) / 8, rng.random(512).astype(np.float32)
    fitted = logistic.prior_model([kernel], bias, False, (mean, scale), 64)

    exported = inference_model(model, {"Prior": fitted})
    posters = rng.random((3, 64, 64, 3)).astype(np.float32)
    got = exported(posters, training=False).numpy()  # posters alone in, as the plain cnn's

    # The histogram in numpy: 8 levels a channel, the shares' square roots.
    levels = np.minimum((posters * 8).astype(int), 7).reshape(3, -1, 3)
    index = (levels[..., 0] * 8 + levels[..., 1]) * 8 + levels[..., 2]
    shares = np.stack([np.bincount(i, minlength=512) for i in index]) / index.shape[1]
    expected = 1 / (1 + np.exp(-(((np.sqrt(shares) - mean) * scale) @ kernel + bias)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    plain = TrainConfig(model="cnn", data="d", output="o", colour_logistic=False)
    assert not isinstance(build_for(plain, 2, None).input, dict)


@pytest.mark.parametrize("model", ["cnn", "fusion"])
def test_an_untrained_model_is_the_regression(model):
    # The network's part of the logits starts at zero: training starts from the regression.
    config = TrainConfig(model=model, data="d", output="o", colour_logistic=True)
    tokens = keras.layers.TextVectorization(vocabulary=["a", "b"], output_sequence_length=64)
    built = build_for(config, 3, {"Tokens": tokens} if model == "fusion" else None)
    rng = np.random.default_rng(2)
    prior = rng.normal(size=(4, 3)).astype(np.float32)
    inputs = {"Poster": rng.random((4, 64, 64, 3)).astype(np.float32), "Prior": prior}
    if model == "fusion":
        inputs["Tokens"] = rng.integers(1, 4, size=(4, 64))

    got = built(inputs, training=False).numpy()

    np.testing.assert_allclose(got, 1 / (1 + np.exp(-prior)), rtol=1e-6)


def prior_inputs(config: TrainConfig, inputs) -> tuple[dict, list[str]]:
    """What the regression of `config`'s run reads of `inputs`, by the prior model's keys."""
    if config.model == "cnn":
        return {"Poster": inputs}, ["Poster"]
    return {"Ngrams": inputs["Ngrams"]}, ["Ngrams"]


def test_a_run_s_fits_log_no_retracing_warning(caplog):
    """A run makes 8 fits (5 folds, 3 strengths): TensorFlow would warn from the 5th on
    that a function is traced again and again; each fit's function is new by design."""
    parts = [tf.constant(np.eye(4, dtype=np.float32))]
    y = tf.constant(np.eye(4, 2, dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for _ in range(6):
            logistic.fit_one(parts, y, 10.0)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "flag", "more"),
    [
        ("lstm", "--tfidf-logistic", ()),
        ("cnn", "--colour-logistic", ("--colour-features", "histogram")),
        ("cnn", "--colour-logistic", ("--colour-features", "statistics")),
    ],
)
def test_a_run_feeds_out_of_fold_logits_and_exports_the_full_fit(
    demo_dir, tmp_path, cli, model, flag, more
):
    run = tmp_path / "run"

    result = cli(*train_args(model, str(demo_dir), str(run), "--epochs", "2", flag, *more))

    assert result.exit_code == 0, result.output
    config = TrainConfig.from_json((run / "config.json").read_text())
    assert config.run["logistic_c"] in logistic.C_GRID
    assert getattr(config, flag[2:].replace("-", "_")) is True
    check_values(str(run), json.loads((run / "config.json").read_text()))
    films, inputs, _, split = load_films(config)
    features = logistic.features_of(
        inputs, model, config.tfidf_logistic, config.colour_logistic, config.colour_features
    )
    assert features.kind == config.colour_features == (more[1] if more else "histogram")
    found = logistic.prior(features, films.labels, split, config.seed)
    assert found.c == config.run["logistic_c"]
    # A training film's logits: from a fit without it (they differ from the full fit's);
    # the other films': the full fit's, which the exported model holds.
    held, keys = prior_inputs(config, inputs)
    assert sorted(found.model.input) == keys
    dataset = pipeline.make_dataset(held, films.labels, 256, False, 0)
    full = found.model.predict(dataset.map(lambda x, _: x), verbose=0)
    train = split == "train"
    np.testing.assert_allclose(found.logits[~train], full[~train], atol=1e-4)
    assert np.abs(found.logits[train] - full[train]).mean() > 0.01  # (1e-7 without folds)
    exported = keras.saving.load_model(run / "model.keras")
    saved = next(layer for layer in exported.layers if layer.name == "logistic")
    for got, want in zip(saved.get_weights(), found.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
