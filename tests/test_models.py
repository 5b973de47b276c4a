"""The notebook's layers, exactly: names, output shapes, parameter counts."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from job.config import TUNED_RECIPE, TrainConfig
from job.model.networks import (
    build_cnn,
    build_for,
    build_fusion,
    build_lstm,
    make_loss,
    positive_weights,
)

CNN_LAYERS = [  # name, output shape without the batch axis
    ("Poster", (64, 64, 3)),
    ("Conv0", (32, 32, 16)),
    ("Drop1", (32, 32, 16)),
    ("Conv1", (32, 32, 32)),
    ("Conv2", (32, 32, 32)),
    ("Drop2", (32, 32, 32)),
    ("Pool1", (16, 16, 32)),
    ("Conv3", (16, 16, 64)),
    ("Conv4", (16, 16, 64)),
    ("Drop3", (16, 16, 64)),
    ("Pool2", (8, 8, 64)),
    ("Conv5", (8, 8, 128)),
    ("Conv6", (8, 8, 128)),
    ("Drop4", (8, 8, 128)),
    ("Pool3", (4, 4, 128)),
    ("Flat", (2048,)),
    ("FC1", (1024,)),
    ("Drop5", (1024,)),
    ("FC2", (1024,)),
    ("Drop6", (1024,)),
    ("Output", (25,)),
]


def test_cnn_is_the_notebooks():
    model = build_cnn(25)

    assert [(layer.name, tuple(layer.output.shape[1:])) for layer in model.layers] == CNN_LAYERS
    assert model.count_params() == 3_464_601
    rates = {layer.name: layer.rate for layer in model.layers if "Drop" in layer.name}
    assert rates == {
        "Drop1": 0.2,
        "Drop2": 0.2,
        "Drop3": 0.2,
        "Drop4": 0.2,
        "Drop5": 0.5,
        "Drop6": 0.5,
    }
    assert model.get_layer("Conv0").strides == (2, 2)
    assert model.get_layer("Output").activation.__name__ == "sigmoid"


def test_lstm_is_the_notebooks():
    model = build_lstm(25, vocabulary_size=10_000, sequence_length=100)

    embedding = model.get_layer("Embedding")
    assert (embedding.input_dim, embedding.output_dim, embedding.mask_zero) == (10_000, 256, True)
    first, second = model.get_layer("BiLSTM1"), model.get_layer("BiLSTM2")
    for layer, units, sequences in ((first, 256, True), (second, 128, False)):
        lstm = layer.forward_layer
        assert (lstm.units, lstm.dropout, lstm.recurrent_dropout) == (units, 0.5, 0.2)
        assert lstm.return_sequences is sequences
    assert tuple(first.output.shape[1:]) == (100, 512)
    assert tuple(second.output.shape[1:]) == (256,)
    assert model.get_layer("Dense").units == 128
    assert model.get_layer("Drop").rate == 0.8
    assert tuple(model.output.shape[1:]) == (25,)
    assert model.count_params() == 4_303_129


def test_fusion_joins_both_notebook_models_before_one_output():
    cnn, lstm = build_cnn(25), build_lstm(25, vocabulary_size=10_000, sequence_length=100)
    cnn_params, lstm_params = cnn.count_params(), lstm.count_params()

    model = build_fusion(cnn, lstm, 25)

    assert sorted(model.input) == ["Poster", "Tokens"]
    assert tuple(model.get_layer("Joined").output.shape[1:]) == (1024 + 128,)
    # Each branch is its notebook model without its output layer; one new output on both.
    branch = model.get_layer("poster")
    assert [layer.name for layer in branch.layers] == [name for name, _ in CNN_LAYERS[:-1]]
    assert model.get_layer("overview").layers[-1].name == "Drop"
    expected = cnn_params - (1024 * 25 + 25) + lstm_params - (128 * 25 + 25) + (1152 * 25 + 25)
    assert model.count_params() == expected


def test_recipe_notebook_is_the_notebooks_and_flags_override():
    notebook = TrainConfig(model="lstm", data="d", output="o", recipe="notebook")
    assert (notebook.epochs, notebook.learning_rate, notebook.constant_epochs) == (20, 1e-4, 10)
    assert (notebook.lr_decay, notebook.sequence_length, notebook.recurrent_dropout) == (
        0.01,
        100,
        0.2,
    )
    assert (notebook.early_stopping, notebook.lstm_dropout, notebook.lstm_dense_dropout) == (
        0,
        0.5,
        0.8,
    )
    assert (notebook.class_weight, notebook.embedding_init) == ("none", "random")
    assert (notebook.mixed_precision, notebook.augment) == (False, True)
    assert TrainConfig(model="cnn", data="d", output="o", recipe="notebook").epochs == 40
    # "seed", the recipe's old name, is the same recipe (and a run recorded with it loads).
    seed = TrainConfig(model="lstm", data="d", output="o", recipe="seed")
    assert seed == notebook and seed.recipe == "notebook"
    tuned = TrainConfig(model="lstm", data="d", output="o", learning_rate=0.05, early_stopping=0)
    assert (tuned.recipe, tuned.learning_rate, tuned.early_stopping) == ("tuned", 0.05, 0)
    assert (tuned.lr_decay, tuned.embedding_init) == (TUNED_RECIPE["lr_decay"], "lsa")
    # The cnn's tuned values: the notebook's schedule to the end, mixed precision left to measure.
    cnn = TrainConfig(model="cnn", data="d", output="o")
    assert (cnn.learning_rate, cnn.early_stopping, cnn.epochs) == (1e-4, 0, 40)
    assert cnn.mixed_precision is None
    # The notebook's layers under its recipe: exactly the models asserted above.
    vocabulary = keras.layers.TextVectorization(vocabulary=["a", "b"])
    rebuilt = build_for(notebook, 25, {"Tokens": vocabulary})
    assert rebuilt.get_layer("BiLSTM1").forward_layer.recurrent_dropout == 0.2
    assert rebuilt.get_layer("Drop").rate == 0.8


def test_dropout_flags_reach_their_layers():
    config = TrainConfig(model="cnn", data="d", output="o", cnn_dropout=0.1, cnn_dense_dropout=0.3)
    model = build_for(config, 25, None)
    rates = {layer.name: layer.rate for layer in model.layers if "Drop" in layer.name}
    conv_blocks, dense_layers = ["Drop1", "Drop2", "Drop3", "Drop4"], ["Drop5", "Drop6"]
    assert rates == dict.fromkeys(conv_blocks, 0.1) | dict.fromkeys(dense_layers, 0.3)


def test_learning_rate_scales_with_the_global_batch_only_when_asked():
    config = TrainConfig(model="cnn", data="d", output="o", learning_rate=1e-3)
    assert config.learning_rate_for(256) == 1e-3
    config.scale_learning_rate = True
    assert config.learning_rate_for(256) == pytest.approx(4e-3)
    assert config.learning_rate_for(64) == pytest.approx(1e-3)


def test_class_weights_and_the_weighted_loss():
    labels = np.array([[1, 0], [1, 0], [1, 1], [0, 0]], dtype=np.float32)  # 3 and 1 positives
    assert positive_weights(labels, "none") is None
    np.testing.assert_allclose(positive_weights(labels, "balanced"), [1.0, 3.0])  # 1/3 -> 1
    np.testing.assert_allclose(positive_weights(labels, "sqrt"), [1.0, 3**0.5])
    y_true = np.array([[1.0, 0.0]], dtype=np.float32)
    y_pred = np.array([[0.8, 0.4]], dtype=np.float32)
    weighted = make_loss(np.array([2.0, 5.0], dtype=np.float32))(y_true, y_pred)
    # genre 0 positive: -2 log 0.8; genre 1 negative (weight only on positives): -log 0.6
    expected = (-2 * np.log(0.8) - np.log(0.6)) / 2
    assert float(weighted) == pytest.approx(expected, rel=1e-5)
    plain = make_loss(None)(y_true, y_pred)
    same = make_loss(np.ones(2, dtype=np.float32))(y_true, y_pred)
    assert float(plain) == pytest.approx(float(same), rel=1e-5)
