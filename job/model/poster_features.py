"""What the cnn joins and its regression reads of a poster beside the network's own
features (colour_features): the joint RGB histogram ("histogram"), or that and hue,
saturation and value histograms and the strength of edges, overall and on an 8 x 8 grid
("statistics"). Layers without weights, computed in the model from its pixels: they run
wherever the model runs, under any strategy, and in the export."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


def root_shares(levels: tf.Tensor, size: int) -> tf.Tensor:
    """(batch, ...) int levels in [0, size) -> (batch, size): the square roots of each
    row's histogram's shares (the colour baseline's scaling)."""
    levels = tf.reshape(levels, (tf.shape(levels)[0], -1))
    # The raw op with a constant size: tf.math.bincount computes its size from the data,
    # which XLA (--jit-compile) refuses. No weights: counts, as float32.
    counts = tf.raw_ops.DenseBincount(
        input=levels, size=size, weights=tf.zeros([0]), binary_output=False
    )
    return tf.sqrt(counts / tf.cast(tf.shape(levels)[1], tf.float32))


@keras.saving.register_keras_serializable(package="genre_job")
class ColourHistogram(layers.Layer):
    """Posters (batch, height, width, 3) in [0, 1] -> the square roots of their joint RGB
    histogram's shares, bins**3 a poster (scripts/baseline_colour.py's features). No
    weights: it runs wherever the model runs, under any strategy, and in the export."""

    def __init__(self, bins: int = 8, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")  # bins of bfloat16 pixels would be off by one
        kwargs.setdefault("trainable", False)  # (its config holds it when loaded)
        super().__init__(**kwargs)
        self.bins = bins

    def call(self, posters):
        scaled = tf.floor(tf.cast(posters, tf.float32) * self.bins)
        levels = tf.clip_by_value(tf.cast(scaled, tf.int32), 0, self.bins - 1)  # 1.0 -> last
        index = (levels[..., 0] * self.bins + levels[..., 1]) * self.bins + levels[..., 2]
        return root_shares(index, self.bins**3)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins**3)

    def get_config(self) -> dict:
        return {**super().get_config(), "bins": self.bins}


HSV_BINS = (18, 8, 8)  # hue in 20-degree steps; saturation and value coarser
EDGE_BINS = 16  # Sobel magnitudes of the grey poster, up to EDGE_CEILING
EDGE_CEILING = 4.0  # the largest magnitude of a [0, 1] image is 4 * sqrt(2); few reach 4
GRID = 8  # the mean edge strength of each of GRID x GRID areas: where the detail is


def shares(values: tf.Tensor, bins: int) -> tf.Tensor:
    """(batch, ...) values in [0, 1] -> (batch, bins): root_shares of their `bins` levels."""
    levels = tf.clip_by_value(tf.cast(tf.floor(values * bins), tf.int32), 0, bins - 1)
    return root_shares(levels, bins)


@keras.saving.register_keras_serializable(package="genre_job")
class PosterStatistics(layers.Layer):
    """Posters (batch, height, width, 3) in [0, 1] -> ColourHistogram's bins**3 features,
    then HSV histograms (sum(HSV_BINS)), the edge-strength histogram (EDGE_BINS) and grid
    (GRID**2): 626 a poster with 8 bins. No weights, as ColourHistogram."""

    def __init__(self, bins: int = 8, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.bins = bins
        self.histogram = ColourHistogram(bins, name="histogram")

    def call(self, posters):
        pixels = tf.cast(posters, tf.float32)
        hsv = tf.image.rgb_to_hsv(pixels)
        grey = tf.reduce_mean(pixels, axis=-1, keepdims=True)
        edges = tf.norm(tf.image.sobel_edges(grey), axis=-1)  # (batch, height, width, 1)
        # Block means by pooling (XLA has no area resize); rows and columns past the last
        # whole block are left out (none at 64 x 64).
        height, width = edges.shape[1] // GRID, edges.shape[2] // GRID
        grid = tf.nn.avg_pool2d(edges, (height, width), (height, width), "VALID")[:, :GRID, :GRID]
        return tf.concat(
            [
                self.histogram(pixels),
                *[shares(hsv[..., i], bins) for i, bins in enumerate(HSV_BINS)],
                shares(tf.minimum(edges / EDGE_CEILING, 1.0), EDGE_BINS),
                tf.reshape(grid, (tf.shape(grid)[0], GRID * GRID)),
            ],
            axis=-1,
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.width(self.bins))

    @staticmethod
    def width(bins: int = 8) -> int:
        return bins**3 + sum(HSV_BINS) + EDGE_BINS + GRID * GRID

    def get_config(self) -> dict:
        return {**super().get_config(), "bins": self.bins}


# The layer of each colour_features kind: what the cnn joins and its regression reads.
POSTER_FEATURES = {"histogram": ColourHistogram, "statistics": PosterStatistics}
