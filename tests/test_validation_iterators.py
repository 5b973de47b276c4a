"""Keras `fit` under the job's MirroredStrategy reads each training and validation batch
once an epoch: no distributed iterator is started for one batch and then dropped while its
thread prefetches, which crashed TensorFlow with a SIGSEGV now and then
(run.build_from_a_plain_batch)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from job.train.run import build_from_a_plain_batch
from job.train.strategy import make_strategy

EPOCHS, BATCHES, BATCH = 3, 10, 4


def batches_read(plain_build: bool) -> tuple[int, int]:
    """(training, validation) batches the two pipelines produced in a fit of EPOCHS."""
    produced = {"train": tf.Variable(0, dtype=tf.int64), "val": tf.Variable(0, dtype=tf.int64)}

    def counted(name: str) -> tf.data.Dataset:
        def count(x, y):
            produced[name].assign_add(1)
            return x, y

        rng = np.random.default_rng(0)
        x = rng.random((BATCH * BATCHES, 4), dtype=np.float32)
        y = (rng.random((BATCH * BATCHES, 2)) > 0.5).astype(np.float32)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).map(count)

    train, validation = counted("train"), counted("val")
    strategy = make_strategy(1)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="sigmoid")])
        model.compile("adam", "binary_crossentropy")
    if plain_build:
        build_from_a_plain_batch(model, validation)
        produced["val"].assign(0)  # (the one batch it read)
    model.fit(train, validation_data=validation, epochs=EPOCHS, verbose=0)
    return int(produced["train"].numpy()), int(produced["val"].numpy())


def test_fit_reads_each_batch_once_an_epoch():
    assert batches_read(plain_build=True) == (EPOCHS * BATCHES, EPOCHS * BATCHES)


def test_keras_alone_starts_iterators_it_drops():
    """Why build_from_a_plain_batch exists: left alone, Keras reads batches beyond the
    epochs' own, from the iterators it starts to build the model and drops. (If a Keras
    release stops doing that, this fails: build_from_a_plain_batch may then go.)"""
    training, validation = batches_read(plain_build=False)
    assert training > EPOCHS * BATCHES and validation > EPOCHS * BATCHES
