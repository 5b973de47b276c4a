"""Posters -> uint8 (size, size, 3) arrays: the first epoch's one decoding pass.

Posters are read from a local folder by tf.data itself, or fetched from a bucket (or any
fsspec file system) in chunks with the next chunks in flight (job/fetching.py), then
decoded DECODE_BATCH at a time on a private pool of DECODE_CALLS threads into the chosen
cache (job/cache.py): JPEGs at the JPEG scale the header allows (decode_resized), PNG,
GIF, BMP and WebP full-size (decode_other), whatever the file's name says. Corrupt
or oversized posters drop their film, counted and logged; a storage failure stops the run.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from job import fetching, poster_files, storage
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

    One listing of the folder says which posters exist and under which names
    (job/poster_files.py). From a bucket, posters are fetched in chunks, the next chunk's
    requests in flight while this one decodes, so the bucket's latency and the decoder
    overlap instead of adding up; all chunks flow through one decoding pipeline. From a
    local folder, tf.data reads the files itself in the decoding calls: no Python between
    file and decoder (feeding the decoder from Python reads instead made the first epoch
    slower). Returns the films kept and their posters, uint8 (films, size, size, 3), held
    as `cache` says.
    """
    names = poster_files.find_posters(images_url, catalogue.ids)
    listed = np.array([name is not None for name in names], dtype=bool)
    urls = [storage.join(images_url, name) for name in names if name is not None]
    found = np.zeros(len(urls), dtype=bool)  # of the listed posters, those still there
    blobs_of: dict[int, bytes] = {}  # --cache none keeps the posters' bytes

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
    if folder is not None:  # the decoding calls read the files (a vanished one: unreadable)
        found[:] = True
        paths = [os.path.join(folder, name) for name in names if name is not None]
        stream = decode_stream(iter([(np.arange(len(paths)), paths)]), image_size, True, decoding)
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
    catalogue = catalogue.drop(listed, "no poster")
    catalogue = catalogue.drop(found, "no poster")
    return catalogue.drop(good[found], "unreadable poster"), sink.posters()


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
    """Poster bytes -> (size, size, 3) uint8; fails on corrupt, unknown or oversized (bomb)
    posters. The format is told by the bytes, not the file's name (a PNG saved as .jpg
    decodes as a PNG): JPEG as decode_resized decodes it; PNG, GIF, BMP and WebP full-size
    through tf.io.decode_image, then resized the same way.

    One switch a poster picks the JPEG scale or the other formats' decoder (decode_other):
    a tf.cond on the format in front of the JPEG switch cost every JPEG poster more CPU
    (docs/performance.md). Only a JPEG reaches extract_jpeg_shape (it fails on anything
    else); another format is given a stand-in JPEG's header there, and its own header is
    checked for bombs in decode_other.
    """
    check_decoding(decoding)
    jpeg = tf.io.is_jpeg(blob)
    shape = tf.image.extract_jpeg_shape(tf.where(jpeg, blob, stand_in_jpeg()))
    decoders = [*jpeg_decoders(blob, decoding), lambda: decode_other(blob)]
    index = tf.where(jpeg, jpeg_decoder_index(shape, image_size, decoding), len(decoders) - 1)
    with tf.control_dependencies([refuse_bombs(shape)]):
        image = tf.switch_case(index, decoders)
    return resized(image, image_size, decoding)


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
    check_decoding(decoding)
    index = jpeg_decoder_index(shape, image_size, decoding)
    image = tf.switch_case(index, jpeg_decoders(blob, decoding))
    return resized(image, image_size, decoding)


def check_decoding(decoding: str) -> None:
    if decoding not in POSTER_DECODINGS:
        raise ValueError(f"unknown poster decoding {decoding!r}")


def jpeg_decoders(blob: tf.Tensor, decoding: str) -> list:
    """Functions decoding the JPEG `blob` to (h, w, 3) uint8: full-size ("full_bilinear"),
    or at each scale libjpeg offers ("scaled_area": ratio is an attribute of the op, so one
    function a ratio)."""
    ratios = (1,) if decoding == FULL_SIZE_DECODING else (1, 2, 4, 8)
    return [lambda r=r: tf.io.decode_jpeg(blob, channels=3, ratio=r) for r in ratios]


def jpeg_decoder_index(shape: tf.Tensor, image_size: int, decoding: str) -> tf.Tensor:
    """Which of jpeg_decoders: the smallest scale that keeps both sides >= image_size."""
    if decoding == FULL_SIZE_DECODING:
        return tf.constant(0)
    smaller_side = tf.reduce_min(shape[:2])
    return tf.add_n([tf.cast(smaller_side >= k * image_size, tf.int32) for k in (2, 4, 8)])


def resized(image: tf.Tensor, image_size: int, decoding: str) -> tf.Tensor:
    """(h, w, 3) uint8 -> (size, size, 3) uint8: area-averaged ("scaled_area"), or an
    antialiased bilinear resize ("full_bilinear")."""
    full = decoding == FULL_SIZE_DECODING
    size = [image_size, image_size]
    image = tf.image.resize(image, size, "bilinear" if full else "area", antialias=full)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


@functools.cache
def stand_in_jpeg() -> bytes:
    """A small valid JPEG: what extract_jpeg_shape reads in place of another format."""
    with tf.init_scope():  # (eager, even while a tf.data function is being traced)
        return tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)).numpy()


def refuse_bombs(shape: tf.Tensor) -> tf.Operation:
    """An assertion that the (height, width, ...) `shape` read from a poster's header has
    at most MAX_POSTER_PIXELS: run before decoding, it fails without allocating the image."""
    # A plain Assert with a constant message: assert_less_equal's message holds the
    # tensors, which puts a cond in every poster's decoding.
    return tf.debugging.Assert(
        tf.reduce_prod(tf.cast(shape[:2], tf.int64)) <= MAX_POSTER_PIXELS,
        ["poster over 25 megapixels"],
    )


# A function call that stays one op: inlined, its ops sat in the JPEG posters' switch too,
# where the branch not taken still costs each of its ops (docs/performance.md).
@tf.function(
    input_signature=[tf.TensorSpec([], tf.string)], experimental_attributes={"_noinline": True}
)
def decode_other(blob: tf.Tensor) -> tf.Tensor:
    """A PNG, GIF (its first frame), BMP or WebP poster -> (h, w, 3) uint8, full-size,
    after its header passed the bomb check."""
    with tf.control_dependencies([refuse_bombs(header_shape(blob))]):
        # As stored (channels=3 is refused for a WebP with alpha), then RGB: alpha dropped
        # as decode_png drops it, gray repeated.
        image = tf.io.decode_image(blob, expand_animations=False)  # (h, w, 1-4) uint8
    rgb = tf.where(tf.shape(image)[2] >= 3, tf.range(3), tf.zeros(3, tf.int32))
    image = tf.gather(image, rgb, axis=2)
    image.set_shape([None, None, 3])
    return image


def header_shape(blob: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 from a PNG, GIF, BMP or WebP header, as their decoders read
    it; (0, 0) for anything else (tf.io.decode_image then refuses it)."""
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(blob, 0, 30), b"\0" * 30]), 0, 30)
    byte = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)  # (30,)

    def little(start: int, count: int) -> tf.Tensor:  # unsigned little-endian integer
        return tf.add_n([byte[start + i] * 256**i for i in range(count)])

    def big(start: int, count: int) -> tf.Tensor:
        return tf.add_n([byte[start + i] * 256 ** (count - 1 - i) for i in range(count)])

    def signed(value: tf.Tensor) -> tf.Tensor:  # BMP: int32 (a negative height: top-down)
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    def starts(position: int, magic: bytes) -> tf.Tensor:
        return tf.equal(tf.strings.substr(head, position, len(magic)), magic)

    webp = starts(0, b"RIFF") & starts(8, b"WEBP")
    lossless = little(21, 4)  # VP8L: 14 bits width - 1, then 14 bits height - 1
    formats = [  # (is it, (height, width))
        (starts(0, b"\x89PNG\r\n\x1a\n"), (big(20, 4), big(16, 4))),
        (starts(0, b"GIF8"), (little(8, 2), little(6, 2))),  # the logical screen
        (starts(0, b"BM"), (signed(little(22, 4)), signed(little(18, 4)))),
        (webp & starts(12, b"VP8X"), (little(27, 3) + 1, little(24, 3) + 1)),  # the canvas
        (webp & starts(12, b"VP8 "), (little(28, 2) % 2**14, little(26, 2) % 2**14)),
        (webp & starts(12, b"VP8L"), (lossless // 2**14 % 2**14 + 1, lossless % 2**14 + 1)),
    ]
    shapes = tf.stack([tf.stack(shape) for _, shape in formats] + [tf.zeros(2, tf.int64)])
    known = tf.stack([known for known, _ in formats])
    kind = tf.reduce_min(tf.where(known, tf.range(len(formats)), len(formats)))  # the first
    return tf.gather(shapes, kind)
