"""A logistic regression over the TF-IDF rows, fitted to convergence before a run trains.

Its logits reach the model as the "Prior" input, added to the network's own before the
sigmoid (networks.build_fusion with `prior`), so the network learns what the linear model
misses. A training film's logits come from fits that did not see it (5 folds): fitted on
all of them, the regression's training logits are far surer than on new films, and the
network learnt almost nothing beside them (docs/accuracy.md, fifth round). The other
films, and the exported model (the fitted layer in front, prior_model), use the fit on
every training film.

Adam with early stopping on the validation loss never found the regularised optimum of a
linear layer over these rows (docs/accuracy.md, second round): this fit does, full batch,
in TensorFlow (no scikit-learn in the image). Its rows are each scaled to unit length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from job.data.pipeline import NgramRows
from job.model import metrics

log = logging.getLogger(__name__)

# The inverse L2 strength C (scikit-learn's meaning, per genre), chosen on validation mAP.
C_GRID = (10.0, 30.0, 100.0)
# Full-batch Adam: converged by then on the real films, to scikit-learn's mAP on the same rows.
STEPS = 1000
LEARNING_RATE = 0.3
FOLDS = 5  # the training films' own logits: each from the fit on the other 4 folds


@dataclass
class Prior:
    logits: np.ndarray  # (films, genres) float32: every film's "Prior" input
    model: keras.Model  # TF-IDF rows -> logits: the fit on every training film
    c: float


def prior(rows: NgramRows, labels: np.ndarray, split: np.ndarray, seed: int) -> Prior:
    """The regression's logits for every film (a training film's out of fold) and the
    regression fitted on all the training films, its C chosen on the validation films."""
    train, validation = split == "train", split == "validation"
    kernel, bias, c = fit(rows, labels, train, validation)
    logits = (tf.sparse.sparse_dense_matmul(unit_rows(rows), kernel) + bias).numpy()
    trained = np.flatnonzero(train)
    folds = np.random.default_rng(seed).permutation(len(trained)) % FOLDS
    for fold in range(FOLDS):
        held, others = trained[folds == fold], trained[folds != fold]
        fold_kernel, fold_bias = _fit_one(
            unit_rows(rows[others]), tf.constant(labels[others], tf.float32), c
        )
        held_logits = tf.sparse.sparse_dense_matmul(unit_rows(rows[held]), fold_kernel)
        logits[held] = (held_logits + fold_bias).numpy()
    return Prior(logits.astype(np.float32), prior_model(kernel, bias), c)


def prior_model(kernel: np.ndarray, bias: np.ndarray) -> keras.Model:
    """TF-IDF rows (films, width) -> the regression's logits (films, genres), frozen."""
    rows = keras.Input((kernel.shape[0],), name="Ngrams")
    unit = keras.layers.UnitNormalization(dtype="float32", name="NgramsUnit")(rows)
    dense = keras.layers.Dense(kernel.shape[1], dtype="float32", trainable=False, name="Fitted")
    model = keras.Model(rows, dense(unit), name="tfidf_logistic")
    dense.set_weights([kernel, bias])
    return model


def unit_rows(rows: NgramRows) -> tf.SparseTensor:
    """The rows as one sparse (films, width) matrix, each row of unit length."""
    films = tf.cast(rows.columns.value_rowids(), tf.int64)
    columns = tf.cast(rows.columns.flat_values, tf.int64)
    values = tf.cast(rows.weights.flat_values, tf.float32)
    lengths = tf.sqrt(tf.math.unsorted_segment_sum(tf.square(values), films, len(rows)))
    values = values / tf.maximum(tf.gather(lengths, films), 1e-12)
    shape = [len(rows), rows.width]
    return tf.sparse.reorder(tf.SparseTensor(tf.stack([films, columns], 1), values, shape))


def fit(
    rows: NgramRows, labels: np.ndarray, train: np.ndarray, validation: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """(kernel (width, genres), bias (genres,), C) of the regression fitted on the `train`
    films whose C scored the best mAP on the `validation` films."""
    x_train, x_validation = unit_rows(rows[train]), unit_rows(rows[validation])
    y_train = tf.constant(labels[train], tf.float32)
    names = [str(g) for g in range(labels.shape[1])]  # (mAP needs no genre names)
    best = None
    for c in C_GRID:
        kernel, bias = _fit_one(x_train, y_train, c)
        logits = tf.sparse.sparse_dense_matmul(x_validation, kernel) + bias
        score = metrics.score(labels[validation], tf.sigmoid(logits).numpy(), 0.5, names)["mAP"]
        log.info("TF-IDF logistic regression: C %g, validation mAP %.3f", c, score)
        if best is None or score > best[0]:
            best = (score, kernel.numpy(), bias.numpy(), c)
    return best[1], best[2], best[3]


def _fit_one(x: tf.SparseTensor, y: tf.Tensor, c: float) -> tuple[tf.Variable, tf.Variable]:
    films, genres = y.shape
    kernel = tf.Variable(tf.zeros([x.dense_shape[1], genres]))
    bias = tf.Variable(tf.zeros([genres]))
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    # scikit-learn's C * sum(losses) + |w|^2 / 2 per genre, divided by C * films * genres.
    decay = 1.0 / (2 * c * films * genres)

    variables = [kernel, bias]
    optimizer.build(variables)  # (its slots before the loop: none may be made inside it)

    @tf.function
    def steps() -> None:  # all in one graph: with a call a step, calling took most of the time
        for _ in tf.range(STEPS):
            with tf.GradientTape() as tape:
                logits = tf.sparse.sparse_dense_matmul(x, kernel) + bias
                losses = tf.nn.sigmoid_cross_entropy_with_logits(y, logits)
                loss = tf.reduce_mean(losses) + decay * tf.reduce_sum(tf.square(kernel))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    steps()
    return kernel, bias
