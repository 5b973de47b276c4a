"""A logistic regression fitted to convergence before a run trains, over the TF-IDF rows
(--tfidf-logistic), the posters' colour histograms (--colour-logistic), or both at once.

Its logits reach the model as the "Prior" input, added to the network's own before the
sigmoid (networks.with_prior), so the network learns what the linear model misses. A
training film's logits come from fits that did not see it (5 folds): fitted on all of
them, the regression's training logits are far surer than on new films, and the network
learnt almost nothing beside them (docs/accuracy.md, fifth round). The other films, and
the exported model (the fitted layer in front, prior_model), use the fit on every
training film.

Adam with early stopping on the validation loss never found the regularised optimum of a
linear layer over these rows (docs/accuracy.md, second round): this fit does, full batch,
in TensorFlow (no scikit-learn in the image). TF-IDF rows are scaled to unit length;
the posters' features (colour histograms, or poster statistics) standardised on the
training films, then scaled by COLOUR_SCALES.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from job.data import pipeline
from job.data.pipeline import NgramRows
from job.model import metrics
from job.model.poster_features import POSTER_FEATURES

log = logging.getLogger(__name__)


class _NoRetracingWarning(logging.Filter):
    """Each fit is a new function over new variables, traced once by design: TensorFlow's
    warning about a function traced again and again (from the 5th fit on) does not apply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fit_one.<locals>.steps" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_NoRetracingWarning())

# The inverse L2 strength C (scikit-learn's meaning, per genre), chosen on validation mAP.
C_GRID = (10.0, 30.0, 100.0)
# Full-batch Adam: converged by then on the real films, to scikit-learn's mAP on the same rows.
STEPS = 1000
LEARNING_RATE = 0.3
FOLDS = 5  # the training films' own logits: each from the fit on the other 4 folds
# Each part's scale puts its best C on the real films inside C_GRID (docs/accuracy.md, sixth
# round): the TF-IDF rows' length, and the factor on the standardised colour histograms.
NGRAM_SCALE = 0.3
# By colour_features kind ("none": the histogram); "statistics" has 114 more columns than
# "histogram" and its best scale, tried offline on the real films, was 0.005.
COLOUR_SCALES = {"histogram": 0.0025, "statistics": 0.005}


@dataclass
class Features:
    """What the regression reads of each film: TF-IDF rows and/or the posters' features."""

    ngrams: NgramRows | None = None
    colours: np.ndarray | None = None  # (films, width) the posters' features, as computed
    kind: str = "histogram"  # the posters' features: a POSTER_FEATURES key

    def colour_standard(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, scale) of the colours over `rows` (the training films), None without."""
        if self.colours is None:
            return None
        colours = self.colours[rows]
        return colours.mean(0), COLOUR_SCALES[self.kind] / (colours.std(0) + 1e-3)

    def take(self, rows: np.ndarray) -> Features:
        return Features(
            None if self.ngrams is None else self.ngrams[rows],
            None if self.colours is None else self.colours[rows],
            self.kind,
        )

    def parts(self, colour_standard: tuple[np.ndarray, np.ndarray] | None) -> list[tf.Tensor]:
        """The regression's input: [unit-length TF-IDF (sparse)] + [scaled colours]."""
        found = [] if self.ngrams is None else [unit_rows(self.ngrams) * NGRAM_SCALE]
        if self.colours is not None:
            mean, scale = colour_standard
            found.append(tf.constant((self.colours - mean) * scale, tf.float32))
        return found


@dataclass
class Prior:
    logits: np.ndarray  # (films, genres) float32: every film's "Prior" input
    model: keras.Model  # the features' inputs -> logits: the fit on every training film
    c: float


def prior(
    features: Features, labels: np.ndarray, split: np.ndarray, seed: int, image_size: int = 64
) -> Prior:
    """The regression's logits for every film (a training film's out of fold) and the
    regression fitted on all the training films, its C chosen on the validation films."""
    train, validation = split == "train", split == "validation"
    standard = features.colour_standard(train)
    kernels, bias, c = fit(features, labels, train, validation, standard)
    logits = predict(features.parts(standard), kernels, bias).numpy()
    trained = np.flatnonzero(train)
    folds = np.random.default_rng(seed).permutation(len(trained)) % FOLDS
    for fold in range(FOLDS):
        held, others = trained[folds == fold], trained[folds != fold]
        y = tf.constant(labels[others], tf.float32)
        fold_kernels, fold_bias = fit_one(features.take(others).parts(standard), y, c)
        logits[held] = predict(features.take(held).parts(standard), fold_kernels, fold_bias)
    ngrams = features.ngrams is not None
    model = prior_model(kernels, bias, ngrams, standard, image_size, features.kind)
    return Prior(logits.astype(np.float32), model, c)


def features_of(
    inputs: pipeline.Inputs, model: str, ngrams: bool, colours: bool, kind: str = "none"
) -> Features | None:
    """What a run's regression reads of its inputs: their TF-IDF rows (`ngrams`) and the
    features of `kind` (its colour_features; "none": the histogram) of their posters
    (`colours`), those it has; None if neither."""
    held = inputs if isinstance(inputs, dict) else {"Poster": inputs} if model == "cnn" else {}
    found = Features(held.get("Ngrams") if ngrams else None, None, poster_kind(kind))
    if colours and "Poster" in held:
        found.colours = features_of_posters(held["Poster"], found.kind)
    return None if found.ngrams is None and found.colours is None else found


def poster_kind(colour_features: str) -> str:
    """The posters' features the regression reads with a run's colour_features."""
    return "histogram" if colour_features == "none" else colour_features


def features_of_posters(posters: pipeline.Inputs, kind: str = "histogram") -> np.ndarray:
    """(films, width) features of `kind` (POSTER_FEATURES) of the posters, wherever held."""
    dataset = pipeline.make_dataset(posters, np.zeros(len(posters)), 256, False, 0)
    layer = POSTER_FEATURES[kind]()
    return np.concatenate([layer(batch).numpy() for batch, _ in dataset])


def prior_model(
    kernels: list[tf.Variable],
    bias: tf.Variable,
    ngrams: bool,
    colour_standard: tuple[np.ndarray, np.ndarray] | None,
    image_size: int,
    kind: str = "histogram",
) -> keras.Model:
    """{"Ngrams": TF-IDF rows, "Poster": float posters in [0, 1]} (those it reads) -> the
    regression's logits (films, genres), frozen."""
    inputs, parts = {}, []
    if ngrams:
        width = kernels[0].shape[0]
        inputs["Ngrams"] = keras.Input((width + 1,), name="Ngrams")
        # The vectorizer's rows less their first column, the out-of-vocabulary count.
        x = keras.layers.Reshape((width + 1, 1), name="NgramsColumns")(inputs["Ngrams"])
        x = keras.layers.Cropping1D((1, 0), name="NgramsKnown")(x)
        x = keras.layers.Reshape((width,), name="NgramsKnownRows")(x)
        x = keras.layers.UnitNormalization(dtype="float32", name="NgramsUnit")(x)
        parts.append(keras.layers.Rescaling(NGRAM_SCALE, dtype="float32", name="NgramsScaled")(x))
    if colour_standard is not None:
        mean, scale = colour_standard
        inputs["Poster"] = keras.Input((image_size, image_size, 3), name="Poster")
        colours = POSTER_FEATURES[kind](name="PriorColours")(inputs["Poster"])
        standard = keras.layers.Normalization(
            mean=mean, variance=1 / scale**2, dtype="float32", name="ColoursStandard"
        )
        parts.append(standard(colours))
    joined = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="PriorJoined")(parts)
    dense = keras.layers.Dense(bias.shape[0], dtype="float32", trainable=False, name="Fitted")
    model = keras.Model(inputs, dense(joined), name="logistic")
    dense.set_weights([np.concatenate([np.asarray(k) for k in kernels]), np.asarray(bias)])
    return model


def unit_rows(rows: NgramRows) -> tf.SparseTensor:
    """The rows as one sparse (films, width - 1) matrix, each row of unit length, without
    the vectorizer's column 0: its out-of-vocabulary count (most word pairs are rare) would
    outweigh an overview's known words in a unit row (docs/accuracy.md, sixth round)."""
    known = rows.columns.flat_values > 0
    films = tf.cast(tf.boolean_mask(rows.columns.value_rowids(), known), tf.int64)
    columns = tf.cast(tf.boolean_mask(rows.columns.flat_values, known), tf.int64) - 1
    values = tf.cast(tf.boolean_mask(rows.weights.flat_values, known), tf.float32)
    lengths = tf.sqrt(tf.math.unsorted_segment_sum(tf.square(values), films, len(rows)))
    values = values / tf.maximum(tf.gather(lengths, films), 1e-12)
    shape = [len(rows), rows.width - 1]
    return tf.sparse.reorder(tf.SparseTensor(tf.stack([films, columns], 1), values, shape))


def predict(parts: list[tf.Tensor], kernels: list[tf.Tensor], bias: tf.Tensor) -> tf.Tensor:
    """The logits (films, genres) of the rows in `parts`, one kernel a part."""
    products = [
        tf.sparse.sparse_dense_matmul(part, kernel)
        if isinstance(part, tf.SparseTensor)
        else tf.matmul(part, kernel)
        for part, kernel in zip(parts, kernels, strict=True)
    ]
    return tf.add_n(products) + bias


def fit(
    features: Features,
    labels: np.ndarray,
    train: np.ndarray,
    validation: np.ndarray,
    colour_standard: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[tf.Variable], tf.Variable, float]:
    """(kernels (one a part), bias (genres,), C) of the regression fitted on the `train`
    films whose C scored the best mAP on the `validation` films."""
    x_train = features.take(train).parts(colour_standard)
    x_validation = features.take(validation).parts(colour_standard)
    y_train = tf.constant(labels[train], tf.float32)
    names = [str(g) for g in range(labels.shape[1])]  # (mAP needs no genre names)
    best = None
    for c in C_GRID:
        kernels, bias = fit_one(x_train, y_train, c)
        probs = tf.sigmoid(predict(x_validation, kernels, bias)).numpy()
        score = metrics.score(labels[validation], probs, 0.5, names)["mAP"]
        log.info("logistic regression: C %g, validation mAP %.3f", c, score)
        if best is None or score > best[0]:
            best = (score, kernels, bias, c)
    return best[1], best[2], best[3]


def fit_one(
    parts: list[tf.Tensor], y: tf.Tensor, c: float
) -> tuple[list[tf.Variable], tf.Variable]:
    """(kernels, bias) of the regression over `parts` (Features.parts) with strength C."""
    films, genres = y.shape
    kernels = [tf.Variable(tf.zeros([part.shape[1], genres])) for part in parts]
    bias = tf.Variable(tf.zeros([genres]))
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    # scikit-learn's C * sum(losses) + |w|^2 / 2 per genre, divided by C * films * genres.
    decay = 1.0 / (2 * c * films * genres)

    variables = [*kernels, bias]
    optimizer.build(variables)  # (its slots before the loop: none may be made inside it)

    @tf.function
    def steps() -> None:  # all in one graph: with a call a step, calling took most of the time
        for _ in tf.range(STEPS):
            with tf.GradientTape() as tape:
                losses = tf.nn.sigmoid_cross_entropy_with_logits(y, predict(parts, kernels, bias))
                penalty = tf.add_n([tf.reduce_sum(tf.square(kernel)) for kernel in kernels])
                loss = tf.reduce_mean(losses) + decay * penalty
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    steps()
    return kernels, bias
