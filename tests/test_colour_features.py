"""The poster colour-histogram branch (colour_features): the baseline's features computed
inside the model (trained under two replicas and exported: tests/test_text_features.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_text_features import vectorizers

from job.config import TrainConfig
from job.model.networks import build_cnn, build_for
from job.model.poster_features import ColourHistogram


def baseline_histogram(pixels: np.ndarray) -> np.ndarray:
    """scripts/baseline_colour.py's features of uint8 (height, width, 3) pixels."""
    bins = (pixels // 32).reshape(-1, 3).astype(int)
    index = (bins[:, 0] * 8 + bins[:, 1]) * 8 + bins[:, 2]
    counts = np.bincount(index, minlength=512).astype(np.float32)
    return np.sqrt(counts / counts.sum())


def test_colour_histogram_is_the_baseline_s_features_of_the_pixels():
    # By hand: 31 and 0 share the first bin, 32 starts the second, 255 is the last.
    hand = np.array([[[0, 0, 0], [31, 0, 0]], [[32, 0, 0], [255, 255, 255]]], np.uint8)
    posters = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    posters[0, :2, :2] = hand

    layer = keras.layers.deserialize(keras.layers.serialize(ColourHistogram()))  # as loaded
    features = layer(posters.astype(np.float32) / 255).numpy()

    expected = np.zeros(512, np.float32)
    expected[[0, 64, 511]] = np.sqrt([0.5, 0.25, 0.25])
    np.testing.assert_allclose(ColourHistogram()(hand[None] / 255).numpy()[0], expected)
    assert features.shape == (3, 512)
    for poster, row in zip(posters, features, strict=True):
        np.testing.assert_allclose(row, baseline_histogram(poster), rtol=1e-6)


@pytest.mark.parametrize("model", ["cnn", "fusion"])
def test_tuned_posters_models_join_the_colours_and_notebook_ones_do_not(model):
    """Tuned cnn and fusion join them by default."""
    default = TrainConfig(model=model, data="d", output="o")
    assert default.colour_features == "histogram"
    tuned = TrainConfig(model=model, data="d", output="o", colour_features="histogram")
    notebook = TrainConfig(model=model, data="d", output="o", recipe="notebook")
    assert notebook.colour_features == "none"

    built = build_for(tuned, 25, vectorizers(ngrams=False))

    names = [
        layer.name for layer in (built.get_layer("poster") if model == "fusion" else built).layers
    ]
    assert "Colours" in names
    plain = build_for(notebook, 25, vectorizers(ngrams=False))
    if model == "cnn":  # the notebook's model itself, parameter for parameter
        assert plain.count_params() == build_cnn(25).count_params()
        assert built.count_params() == plain.count_params() + 512 * 25 + 4 * 512
