"""The poster colour-histogram branch (colour_features): the baseline's features computed
inside the model (trained under two replicas and exported: tests/test_text_features.py),
and with "statistics" HSV and edge-strength histograms and an edge grid beside them."""

from __future__ import annotations

import colorsys

import keras
import numpy as np
import pytest
from test_text_features import vectorizers

from job.config import TrainConfig
from job.model.networks import build_cnn, build_for
from job.model.poster_features import ColourHistogram, PosterStatistics


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
    assert default.colour_features == {"cnn": "statistics", "fusion": "histogram"}[model]
    assert default.colour_logistic is True
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


def test_poster_statistics_of_a_black_and_white_poster_by_hand():
    poster = np.zeros((1, 16, 16, 3), np.float32)
    poster[:, :, 8:] = 1.0  # black left half, white right half

    features = PosterStatistics()(poster).numpy()[0]

    histogram, hue, saturation, value, edges, grid = np.split(
        features, np.cumsum([512, 18, 8, 8, 16])
    )
    np.testing.assert_allclose(histogram[[0, 511]], np.sqrt([0.5, 0.5]))
    np.testing.assert_allclose(hue, np.eye(18)[0])  # greys: hue 0
    np.testing.assert_allclose(saturation, np.eye(8)[0])
    np.testing.assert_allclose(value, np.sqrt(0.5) * (np.eye(8)[0] + np.eye(8)[7]))
    # Sobel: the two columns beside the border have strength 4 (the last bin), the rest 0.
    np.testing.assert_allclose(edges, np.sqrt(14 / 16 * np.eye(16)[0] + 2 / 16 * np.eye(16)[15]))
    # 8 x 8 areas of 2 x 2 pixels: columns 3 and 4 hold one strong column each, mean 2.
    expected_grid = np.zeros((8, 8), np.float32)
    expected_grid[:, 3:5] = 2.0
    np.testing.assert_allclose(grid.reshape(8, 8), expected_grid, atol=1e-6)


def sobel_strength(grey: np.ndarray) -> np.ndarray:
    """|Sobel gradient| of a (height, width) image, its border reflected (as TensorFlow's)."""
    padded = np.pad(grey, 1, mode="reflect")
    h, w = grey.shape
    window = {(i, j): padded[i : i + h, j : j + w] for i in range(3) for j in range(3)}
    weights = {0: 1, 1: 2, 2: 1}
    dy = sum(weights[j] * (window[2, j] - window[0, j]) for j in range(3))
    dx = sum(weights[i] * (window[i, 2] - window[i, 0]) for i in range(3))
    return np.sqrt(dy**2 + dx**2)


def shares(values: np.ndarray, bins: int) -> np.ndarray:
    levels = np.minimum((values * bins).astype(int), bins - 1).ravel()
    return np.sqrt(np.bincount(levels, minlength=bins) / levels.size)


def test_poster_statistics_are_those_of_the_pixels_computed_apart():
    # Continuous values: integer pixels often sit exactly on a hue bin's edge (1/18), where
    # float32 and float64 round apart.
    posters = np.random.default_rng(3).random((2, 32, 32, 3), np.float32)
    layer = keras.layers.deserialize(keras.layers.serialize(PosterStatistics()))  # as loaded

    features = layer(posters).numpy()

    assert features.shape == (2, PosterStatistics.width()) == (2, 626)
    for poster, row in zip(posters, features, strict=True):
        hsv = np.array([colorsys.rgb_to_hsv(*pixel) for pixel in poster.reshape(-1, 3)])
        strength = sobel_strength(poster.mean(-1))
        expected = np.concatenate(
            [
                shares(np.minimum(poster * 8, 7.5).astype(int) @ [64, 8, 1] / 512, 512),
                *[shares(hsv[:, i], bins) for i, bins in enumerate((18, 8, 8))],
                shares(np.minimum(strength / 4, 1), 16),
                strength.reshape(8, 4, 8, 4).mean((1, 3)).ravel(),
            ]
        )
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)


def test_statistics_widen_the_joined_features_and_the_regression_s():
    config = TrainConfig(model="cnn", data="d", output="o", colour_features="statistics")
    built = build_for(config, 25, None)

    assert built.get_layer("Colours").output.shape[1:] == (626,)
    assert built.count_params() == build_cnn(25).count_params() + 626 * 25 + 4 * 626
