"""Poster JPEGs -> uint8 (size, size, 3) arrays: the first epoch's one decoding pass.

Posters are read from a local folder by tf.data itself, or fetched from a bucket (or any
fsspec file system) in chunks with the next chunks in flight (job/fetching.py), then
decoded DECODE_BATCH at a time on a private pool of DECODE_CALLS threads, at the JPEG
scale the header allows (decode_resized), into the chosen cache (job/cache.py). Corrupt
or oversized posters drop their film, counted and logged; a storage failure stops the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from job import fetching, storage
from job.cache import Posters, PosterSink, no_rewrites
from job.catalogue import Catalogue
from job.progress import Progress

log = logging.getLogger(__name__)

# JPEG decoding runs this many calls at once on a private pool of as many threads, each
# call single-threaded, autotuning off: faster and steadier than tf.data's autotuned
# defaults, which at times kept a thread busy (docs/performance.md).
DECODE_CALLS = 4 * len(os.sched_getaffinity(0))
# Decompression-bomb guard: posters are 150x300; anything over 25 megapixels is refused.
MAX_POSTER_PIXELS = 25_000_000
# Posters decoded per call of the decoding map (see decode_stream).
DECODE_BATCH = 64
# How posters become the model's input (decode_resized). A run records its own in
# config.json (`poster_decoding`) and `predict` decodes as the run did: "full_bilinear"
# was the only way at first, and runs from then record nothing.
POSTER_DECODING = "scaled_area"
FULL_SIZE_DECODING = "full_bilinear"  # config.TrainConfig.from_json's default for old runs
POSTER_DECODINGS = (POSTER_DECODING, FULL_SIZE_DECODING)


def read_posters(
    catalogue: Catalogue,
    images_url: str,
    image_size: int,
    cache: str = "memory",
    cache_dir: str | None = None,
    decoding: str = POSTER_DECODING,
) -> tuple[Catalogue, Posters]:
    """Fetch and decode every film's poster; films without a usable one are dropped.

    From a bucket, posters are fetched in chunks, the next chunk's requests in flight while
    this one decodes, so the bucket's latency and the decoder overlap instead of adding up;
    all chunks flow through one decoding pipeline. From a local folder, tf.data reads the
    files itself in the decoding calls: no Python between file and decoder, and one
    listing of the folder says which posters exist (feeding the decoder from Python reads
    instead made the first epoch slower). Returns the films kept and their posters, uint8
    (films, size, size, 3), held as `cache` says.
    """
    urls = [storage.join(images_url, f"{film_id}.jpg") for film_id in catalogue.ids]
    found = np.zeros(len(urls), dtype=bool)
    blobs_of: dict[int, bytes] = {}  # --cache none keeps the JPEGs

    def fetched_chunks() -> Iterator[tuple[np.ndarray, list[bytes]]]:
        start = 0
        for blobs in fetching.fetch_chunks(urls):  # the next chunks in flight meanwhile
            indexes = [start + i for i, blob in enumerate(blobs) if blob is not None]
            found[indexes] = True
            present = [blobs[i - start] for i in indexes]
            if cache == "none":
                blobs_of.update(zip(indexes, present, strict=True))
            start += len(blobs)
            yield np.array(indexes, dtype=np.int64), present

    folder = storage.local_path(images_url) if cache != "none" else None
    if folder is not None:  # the decoding calls read the files
        names, listed = [f"{film_id}.jpg" for film_id in catalogue.ids], listed_files(folder)
        found[:] = [name in listed for name in names]
        indexes = np.flatnonzero(found)
        paths = [os.path.join(folder, names[i]) for i in indexes]
        stream = decode_stream(iter([(indexes, paths)]), image_size, True, decoding)
    else:
        stream = decode_stream(fetched_chunks(), image_size, decoding=decoding)
    sink = PosterSink(cache, len(urls), image_size, cache_dir, decoding)
    good = np.zeros(len(urls), dtype=bool)
    with Progress("fetch and decode posters", len(urls)) as progress:
        for indexes, images in stream:
            good[indexes] = True
            sink.add(images, [blobs_of.pop(i) for i in indexes] if cache == "none" else [])
            if len(indexes):  # (in catalogue order: every film before this one is done)
                progress.advance_to(int(indexes[-1]) + 1)
        progress.advance_to(len(urls))
    catalogue = catalogue.drop(found, "no poster")
    return catalogue.drop(good[found], "poster not a readable JPEG"), sink.posters()


def listed_files(folder: str) -> frozenset[str]:
    """The names in `folder` (none if it is missing): one listing is faster than a look-up
    a film. A missing poster must not reach the decoder: its batch would fail and be
    decoded one by one."""
    try:
        return frozenset(os.listdir(folder))
    except OSError:  # missing, not a folder, not readable: no posters there
        return frozenset()


def decode_stream(
    chunks: Iterator[tuple[np.ndarray, list]],
    image_size: int,
    files: bool = False,
    decoding: str = POSTER_DECODING,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indexes, JPEG bytes, or with `files` local file paths) chunks -> (indexes, posters
    (n, size, size, 3) uint8) batches of the posters that decode, in input order; corrupt
    (or unreadable) ones are left out.

    Each call of the parallel map reads (`files`) and decodes DECODE_BATCH posters (a map_fn
    inside it), so tf.data's per-element work (slicing the chunk, moving elements between
    threads) is paid once a batch, not once a poster. A batch holding a corrupt poster
    fails as a whole; the pipeline skips it and its posters are decoded one by one here,
    where it belonged.
    """
    taken: list[tuple[np.ndarray, np.ndarray] | None] = []  # the batches in pipeline order

    def batches():
        for indexes, items in chunks:
            for start in range(0, len(items), DECODE_BATCH):
                # An object array: tf.data makes it a string tensor in one step.
                strings = np.empty(len(items[start : start + DECODE_BATCH]), dtype=object)
                strings[:] = items[start : start + DECODE_BATCH]
                taken.append((indexes[start : start + DECODE_BATCH], strings))
                yield taken[-1]

    failed: list[Exception] = []  # what the chunks raised (a bucket that stopped answering)
    if files:  # every path is known: tensor slices, no Python inside the pipeline
        listed = list(batches())  # (all in `taken` now)
        indexes = tf.constant([i for batch, _ in listed for i in batch], tf.int64)
        paths = tf.constant([path for _, batch in listed for path in batch], tf.string)
        source = tf.data.Dataset.from_tensor_slices((indexes, paths)).batch(DECODE_BATCH)
    else:  # chunks of bytes arrive as they are fetched
        source = batches_from_python(batches(), failed)

    spec = tf.TensorSpec((image_size, image_size, 3), tf.uint8)

    def decode_one(item: tf.Tensor) -> tf.Tensor:  # read in the same loop: one map_fn
        return decode_poster(tf.io.read_file(item) if files else item, image_size, decoding)

    def decode(indexes: tf.Tensor, items: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return indexes, tf.map_fn(decode_one, items, fn_output_signature=spec)

    pipeline = (
        source.map(decode, num_parallel_calls=DECODE_CALLS)  # order kept: deterministic map
        .ignore_errors()  # a batch with a corrupt poster: decoded one by one below
        .with_options(decode_options())
    )
    position = 0
    for indexes, posters in pipeline.as_numpy_iterator():
        while taken[position][0][0] != indexes[0]:  # skipped batches come before this one
            yield decode_one_by_one(*taken[position], image_size, files, decoding)
            taken[position], position = None, position + 1
        yield indexes, posters
        taken[position], position = None, position + 1
    if failed:  # (the posters after it never came: no film may pass for one without)
        raise failed[0]
    for batch in taken[position:]:
        yield decode_one_by_one(*batch, image_size, files, decoding)


def batches_from_python(
    batches: Iterator[tuple[np.ndarray, np.ndarray]], failed: list[Exception]
) -> tf.data.Dataset:
    """(indexes, JPEG bytes) batches made in Python as a tf.data source, one numpy_function
    call a batch: less CPU a poster than Dataset.from_generator.
    What `batches` raises is put in `failed` and ends the source: raised in the pipeline,
    the decoding's ignore_errors (there for corrupt posters) took it for the end of the
    posters, and the films not fetched yet were dropped as having none."""

    def next_batch(_) -> tuple[np.ndarray, np.ndarray]:
        try:
            return next(batches)
        except StopIteration:
            pass
        except Exception as error:  # (carried across tf.data to decode_stream, raised there)
            failed.append(error)
        return np.zeros(0, np.int64), np.zeros(0, np.bytes_)  # the end: no batch is empty

    def call(number: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        signature = (tf.int64, tf.string)
        indexes, blobs = tf.numpy_function(next_batch, [number], signature, stateful=True)
        indexes.set_shape([None])
        blobs.set_shape([None])
        return indexes, blobs

    source = tf.data.Dataset.counter().map(call)  # (in order, one call at a time)
    return source.take_while(lambda indexes, _: tf.size(indexes) > 0)


def decode_one_by_one(
    indexes: np.ndarray, items: np.ndarray, image_size: int, files: bool, decoding: str
) -> tuple[np.ndarray, np.ndarray]:
    """The posters of a batch that failed, each decoded alone; the corrupt ones left out."""
    kept, posters = [], [np.zeros((0, image_size, image_size, 3), np.uint8)]
    for index, item in zip(indexes, items, strict=True):
        try:
            blob = Path(item).read_bytes() if files else item
            posters.append(decode_poster(tf.constant(blob), image_size, decoding).numpy()[None])
        except (OSError, tf.errors.InvalidArgumentError):  # unreadable, corrupt, or a bomb
            continue
        kept.append(index)
    return np.array(kept, dtype=np.int64), np.concatenate(posters)


def decode_options() -> tf.data.Options:
    """tf.data options of a pipeline that decodes JPEGs (see DECODE_CALLS)."""
    options = no_rewrites()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = DECODE_CALLS
    options.threading.max_intra_op_parallelism = 1
    return options


def decode_posters(blobs: list[bytes], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize JPEG bytes in parallel; (posters of the good ones, mask of good)."""
    good = np.zeros(len(blobs), dtype=bool)
    posters = [np.zeros((0, image_size, image_size, 3), np.uint8)]
    for indexes, images in decode_stream(iter([(np.arange(len(blobs)), blobs)]), image_size):
        good[indexes] = True
        posters.append(images)
    return np.concatenate(posters), good


def decode_poster(blob: tf.Tensor, image_size: int, decoding: str = POSTER_DECODING) -> tf.Tensor:
    """JPEG bytes -> (size, size, 3) uint8; fails on corrupt or oversized (bomb) posters."""
    shape = tf.image.extract_jpeg_shape(blob)  # (height, width, channels), from the header
    # A plain Assert with a constant message: assert_less_equal's message holds the
    # tensors, which puts a cond in every poster's decoding.
    small = tf.debugging.Assert(
        tf.reduce_prod(tf.cast(shape[:2], tf.int64)) <= MAX_POSTER_PIXELS,
        ["poster over 25 megapixels"],
    )
    with tf.control_dependencies([small]):
        return decode_resized(blob, shape, image_size, decoding)  # errors if corrupt


def decode_resized(
    blob: tf.Tensor, shape: tf.Tensor, image_size: int, decoding: str = POSTER_DECODING
) -> tf.Tensor:
    """JPEG bytes of `shape` (extract_jpeg_shape's) -> (size, size, 3) uint8.

    "scaled_area": libjpeg decodes at 1/2, 1/4 or 1/8 of the size straight from the DCT
    coefficients, skipping most of the work; the poster is decoded at the smallest of these
    that keeps both sides at least `image_size`, then area-averaged down to it. For the
    real 150x300 posters that is half size, then 75x150 -> 64x64: much less work than a
    full decode and an antialiased bilinear resize, which it barely differs from (the
    same micro-F1: docs/accuracy.md).
    "full_bilinear": that full-size decode and antialiased bilinear resize.
    """
    if decoding not in POSTER_DECODINGS:
        raise ValueError(f"unknown poster decoding {decoding!r}")
    size = [image_size, image_size]
    if decoding == FULL_SIZE_DECODING:
        image = tf.io.decode_jpeg(blob, channels=3)  # (h, w, 3) uint8
        resized = tf.image.resize(image, size, antialias=True)
    else:
        smaller_side = tf.reduce_min(shape[:2])
        halvings = tf.add_n([tf.cast(smaller_side >= k * image_size, tf.int32) for k in (2, 4, 8)])
        image = tf.switch_case(  # ratio is an attribute of the op: one branch a ratio
            halvings,
            [lambda r=r: tf.io.decode_jpeg(blob, channels=3, ratio=r) for r in (1, 2, 4, 8)],
        )  # (h / ratio, w / ratio, 3) uint8
        resized = tf.image.resize(image, size, method="area")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
