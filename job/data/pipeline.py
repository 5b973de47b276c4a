"""From films to model inputs, and tf.data pipelines over them.

Each film's input is computed once and kept in memory:
  posters   -> uint8 (64, 64, 3), 12 KB a film, in one decoding pass (job/data/poster_decoding.py):
               later epochs never decode again (in memory, or in a local file:
               job/data/cache.py);
  overviews -> int token ids (100,) from a TextVectorization adapted on TRAINING texts;
               with text_features "tfidf" also TF-IDF weights of words and word
               pairs, kept as each film's nonzero ones and made dense per batch.
The vectorizers run here, once, not inside the replicated model (a TextVectorization
layer inside a model fails under MirroredStrategy with two or more replicas) nor in
tf.data's batches (runs vectorizing there died of segmentation faults).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from job.data.cache import DiskPosters, JpegPosters, Posters, TensorPosters, no_rewrites
from job.data.poster_decoding import DECODE_CALLS, decode_options, decode_poster
from job.data.stopwords import without_stop_words  # registered: model.keras loads with it

AUTOTUNE = tf.data.AUTOTUNE
# An epoch over the cache gathers batches in this many calls at once, 2 batches ready
# ahead, autotuning off: with it, ending an epoch's iterator at times waited for the
# autotuner's thread longer than a whole epoch over the cache takes.
GATHER_CALLS = len(os.sched_getaffinity(0))


def gather_options() -> tf.data.Options:
    """tf.data options of an epoch over the cache (see GATHER_CALLS)."""
    options = no_rewrites()
    options.autotune.enabled = False
    return options


def posters_to_float(inputs):
    """A batch of a model's inputs with its uint8 posters as float32 in [0, 1] (token ids,
    and fusion's under "Tokens", as they are)."""
    if isinstance(inputs, dict):
        return {name: posters_to_float(value) for name, value in inputs.items()}
    return tf.cast(inputs, tf.float32) / 255.0 if inputs.dtype == tf.uint8 else inputs


def make_vectorizer(train_overviews: list[str], max_tokens: int, sequence_length: int):
    """A TextVectorization whose vocabulary comes from the training overviews only."""
    import keras

    vectorizer = keras.layers.TextVectorization(
        max_tokens=max_tokens, output_sequence_length=sequence_length, name="Vectorizer"
    )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(train_overviews).batch(256))
    return vectorizer


def make_ngram_vectorizer(train_overviews: list[str], max_tokens: int, stop_words: bool = False):
    """TF-IDF over words and word pairs (with `stop_words`, of the words left once English
    stop words are dropped); vocabulary and document frequencies from the training
    overviews only."""
    import keras

    vectorizer = keras.layers.TextVectorization(
        max_tokens=max_tokens,
        output_mode="tf_idf",
        ngrams=2,
        standardize=without_stop_words if stop_words else "lower_and_strip_punctuation",
        name="NgramVectorizer",
    )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(train_overviews).batch(256))
    return vectorizer


class NgramRows:
    """Each film's TF-IDF row kept as its nonzero columns and weights (a dense row a film
    would be 80 KB); a batch scatters its films' into dense rows (gatherer)."""

    def __init__(self, columns: tf.RaggedTensor, weights: tf.RaggedTensor, width: int) -> None:
        self.columns, self.weights, self.width = columns, weights, width

    @classmethod
    def of(cls, vectorizer, overviews: list[str], chunk: int = 512) -> NgramRows:
        """`vectorizer`'s rows of `overviews`, vectorized once, `chunk` films at a time."""
        texts = np.asarray(overviews, dtype=object).astype(str)
        columns, weights = [], []
        for start in range(0, len(texts), chunk):
            rows = tf.sparse.from_dense(vectorizer(texts[start : start + chunk]))
            film, column = rows.indices[:, 0], rows.indices[:, 1]
            films = len(texts[start : start + chunk])
            columns.append(tf.RaggedTensor.from_value_rowids(column, film, nrows=films))
            weights.append(tf.RaggedTensor.from_value_rowids(rows.values, film, nrows=films))
        return cls(tf.concat(columns, 0), tf.concat(weights, 0), vectorizer.vocabulary_size())

    def __len__(self) -> int:
        return int(self.columns.nrows())

    def __getitem__(self, rows) -> NgramRows:
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else rows
        return NgramRows(tf.gather(self.columns, rows), tf.gather(self.weights, rows), self.width)


def vectorize(vectorizer, overviews: list[str]) -> np.ndarray:
    """Overview strings -> int64 token ids (films, sequence_length), in a tf.data pass."""
    pipeline = (
        tf.data.Dataset.from_tensor_slices(np.array(overviews, dtype=object).astype(str))
        .batch(512)
        .map(vectorizer, num_parallel_calls=AUTOTUNE)
    )
    chunks = list(pipeline.as_numpy_iterator())
    length = vectorizer.get_config()["output_sequence_length"]
    return np.concatenate(chunks) if chunks else np.zeros((0, length), np.int64)


# A model's inputs: one array (cnn: uint8 posters; lstm: token ids) or, for fusion,
# {"Poster": uint8 posters, "Tokens": token ids}; one row per film either way. Posters
# may be held on disk or as JPEG bytes (job/data/cache.py): indexed the same way.
Inputs = Posters | dict[str, Posters | NgramRows]


def take(inputs: Inputs, rows: np.ndarray) -> Inputs:
    """The inputs of the films selected by `rows` (a mask or indexes)."""
    if isinstance(inputs, dict):
        return {name: array[rows] for name, array in inputs.items()}
    return inputs[rows]


def make_dataset(
    inputs: Inputs,
    labels: np.ndarray,
    batch_size: int,
    training: bool,
    seed: int,
    uint8_posters: bool = False,
) -> tf.data.Dataset:
    """(inputs, labels) batches. Shuffled only when training.

    tf.data shuffles and batches row numbers, and each batch of rows then gathers its
    films in one step: an epoch over cached posters costs a few ops a batch, not a few
    a film. Posters leave as float32 in [0, 1], or (`uint8_posters`: the datasets a run
    trains on) as the cache holds them, uint8: the training model's poster input
    (networks.poster_input) converts and flips them where the model runs. On a GPU node
    that takes 3/4 of an epoch's host work off the CPU and copies a quarter of the bytes.
    """
    rows = tf.data.Dataset.range(len(labels))
    if training:
        rows = rows.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    # Training drops the last partial batch: every replica gets an equal share of a step
    # (shuffling changes which films wait for the next epoch).
    rows = rows.batch(batch_size, drop_remainder=training)
    with tf.device("/cpu:0"):  # the cache stays in host memory, whatever devices exist
        gather_inputs, targets = gatherer(inputs), tf.constant(labels)

    def batch_of(rows: tf.Tensor):
        features = gather_inputs(rows)
        return features if uint8_posters else posters_to_float(features), tf.gather(targets, rows)

    if uses_jpegs(inputs):  # --cache none: decoding threads as in poster_decoding.read_posters
        dataset = rows.map(batch_of, num_parallel_calls=DECODE_CALLS).prefetch(2)
        return dataset.with_options(decode_options())
    dataset = rows.map(batch_of, num_parallel_calls=GATHER_CALLS).prefetch(2)
    return dataset.with_options(gather_options())


def gatherer(inputs: Inputs):
    """A function: batch of row numbers -> those films' inputs, from wherever they are held:
    a tensor (memory), the cache file (disk) or JPEG bytes decoded again (none)."""
    if isinstance(inputs, dict):
        parts = {name: gatherer(held) for name, held in inputs.items()}

        def gather_each(rows: tf.Tensor) -> dict[str, tf.Tensor]:
            return {name: gather(rows) for name, gather in parts.items()}

        return gather_each
    if isinstance(inputs, TensorPosters):  # batch rows -> rows of the one tensor
        rows = tf.constant(inputs.rows)
        return lambda batch: tf.gather(inputs.tensor, tf.gather(rows, batch))
    if isinstance(inputs, DiskPosters):
        return disk_reader(inputs)
    if isinstance(inputs, JpegPosters):
        return jpeg_decoder(inputs)
    if isinstance(inputs, NgramRows):
        return ngram_scatter(inputs)
    held = tf.constant(inputs)  # once, not per batch: (films, ...) uint8 or int64

    def gather(rows: tf.Tensor) -> tf.Tensor:
        return tf.gather(held, rows)

    return gather


def ngram_scatter(ngrams: NgramRows):
    """Batch of row numbers -> (batch, width) float32 TF-IDF rows of those films."""
    columns, weights, width = ngrams.columns, ngrams.weights, ngrams.width

    def scatter(rows: tf.Tensor) -> tf.Tensor:
        batch_columns = tf.gather(columns, rows)
        at = tf.stack([batch_columns.value_rowids(), batch_columns.flat_values], axis=1)
        shape = tf.stack([tf.size(rows, tf.int64), tf.constant(width, tf.int64)])
        return tf.scatter_nd(at, tf.gather(weights, rows).flat_values, shape)

    return scatter


def jpeg_decoder(posters: JpegPosters):
    """Batch of row numbers -> (batch, size, size, 3) uint8 decoded from the JPEG bytes."""
    blobs, size = tf.constant(list(posters.blobs), tf.string), posters.image_size
    spec = tf.TensorSpec((size, size, 3), tf.uint8)

    def decode_one(blob: tf.Tensor) -> tf.Tensor:
        return decode_poster(blob, size, posters.decoding)

    def decode(rows: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(decode_one, tf.gather(blobs, rows), fn_output_signature=spec)

    return decode


def uses_jpegs(inputs: Inputs) -> bool:
    """Whether batches decode JPEGs (--cache none)."""
    held = inputs.values() if isinstance(inputs, dict) else [inputs]
    return any(isinstance(posters, JpegPosters) for posters in held)


def disk_reader(posters: DiskPosters):
    """Batch of row numbers -> (batch, size, size, 3) uint8 read from the cache file."""
    shape = posters.array.shape[1:]
    file_rows = tf.constant(posters.rows)

    def read(rows: tf.Tensor) -> tf.Tensor:
        images = tf.numpy_function(
            posters.read, [tf.gather(file_rows, rows)], tf.uint8, stateful=False
        )
        images.set_shape((None, *shape))
        return images

    return read
