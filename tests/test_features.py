"""The tf.data pipeline (shuffling reproducible from the seed, epochs differ), the poster
input of the training model (conversion, flips), decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from job.features import make_dataset


def epochs(seed: int, count: int = 2) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    posters = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(40, dtype=np.float32)[:, None]
    dataset = make_dataset(posters, labels, 8, training=True, seed=seed, uint8_posters=True)
    return [[x.numpy() for batch in dataset for x in batch] for _ in range(count)]


def test_same_seed_same_batches_new_epoch_new_order():
    first, second = epochs(seed=3), epochs(seed=3)

    for a, b in zip(first, second, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(first[0][1], first[1][1])  # epoch 2 reshuffles
    assert not all(np.array_equal(x, y) for x, y in zip(first[0], epochs(seed=4)[0], strict=True))


def test_posters_leave_as_float_in_0_1_or_as_the_uint8_cache_holds_them():
    posters = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(10, dtype=np.float32)[:, None]

    as_float, _ = next(iter(make_dataset(posters, labels, 10, training=False, seed=0)))
    as_uint8, order = next(iter(make_dataset(posters, labels, 10, True, 0, uint8_posters=True)))

    assert as_float.dtype == "float32"
    np.testing.assert_allclose(as_float.numpy(), posters / 255.0, rtol=1e-6)
    assert as_uint8.dtype == "uint8"
    np.testing.assert_array_equal(as_uint8.numpy(), posters[order.numpy()[:, 0].astype(int)])


def poster_model(flip: bool, seed: int):
    """A layer-less 'model' behind the training poster input: its output is its input."""
    import keras

    from job.models import poster_input

    poster = keras.Input((8, 8, 3), name="Poster")
    return poster_input(keras.Model(poster, poster, name="echo"), flip, seed)


def test_the_training_poster_input_converts_and_flips_half_at_random():
    posters = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    originals = posters / 255.0

    images = poster_model(flip=True, seed=1)(posters, training=True).numpy()
    again = poster_model(flip=True, seed=1)(posters, training=True).numpy()
    predicted = poster_model(flip=True, seed=1)(posters, training=False).numpy()

    flipped = np.all(np.isclose(images, originals[:, :, ::-1]), axis=(1, 2, 3))
    same = np.all(np.isclose(images, originals), axis=(1, 2, 3))
    assert (flipped | same).all()
    assert 10 < flipped.sum() < 54  # about half
    np.testing.assert_array_equal(images, again)  # the seed fixes the flips
    np.testing.assert_allclose(predicted, originals, rtol=1e-6)  # never flipped outside training
    unflipped = poster_model(flip=False, seed=1)(posters, training=True).numpy()
    np.testing.assert_allclose(unflipped, originals, rtol=1e-6)  # --no-augment


@pytest.mark.parametrize("source", ["bytes", "files"])
def test_corrupt_posters_drop_only_themselves_in_any_batch(source, demo_dir, tmp_path):
    """Batches of DECODE_BATCH posters decode together; one holding a corrupt (or, read
    from files, vanished) poster is decoded again one by one: the others keep their place
    and their pixels."""
    from job.jpegs import DECODE_BATCH, decode_poster, decode_stream

    jpegs = [path.read_bytes() for path in sorted((demo_dir / "Images").glob("*.jpg"))]
    count = 3 * DECODE_BATCH + 5  # four batches, the last one short
    blobs = [jpegs[i % len(jpegs)] for i in range(count)]
    corrupt = {0, DECODE_BATCH + 3, 3 * DECODE_BATCH + 4}  # first, second and last batch
    for i in corrupt:
        blobs[i] = blobs[i][:40]  # header only: not a decodable JPEG
    items: list = blobs
    if source == "files":
        items = [str(tmp_path / f"{i}.jpg") for i in range(count)]
        for path, blob in zip(items, blobs, strict=True):
            Path(path).write_bytes(blob)
        Path(items[2 * DECODE_BATCH + 1]).unlink()  # gone after it was listed
        corrupt.add(2 * DECODE_BATCH + 1)

    decoded = list(decode_stream(iter([(np.arange(count), items)]), 64, source == "files"))

    kept = np.concatenate([indexes for indexes, _ in decoded])
    assert sorted(set(range(count)) - set(kept.tolist())) == sorted(corrupt)
    assert kept.tolist() == sorted(kept.tolist())  # input order
    alone = [decode_poster(blobs[i], 64).numpy() for i in kept]
    np.testing.assert_array_equal(np.concatenate([p for _, p in decoded]), np.stack(alone))


def test_a_failure_fetching_posters_is_raised_not_taken_for_their_end(demo_dir):
    """Chunks of fetched posters that stop with an error (a bucket that stopped answering):
    decode_stream raises it, after the posters that came before it (the decoding skips
    corrupt posters; it must not skip the rest of the films)."""
    from job.jpegs import DECODE_BATCH, decode_stream

    jpegs = [path.read_bytes() for path in sorted((demo_dir / "Images").glob("*.jpg"))]
    first = [jpegs[i % len(jpegs)] for i in range(DECODE_BATCH + 3)]

    def chunks():
        yield np.arange(len(first)), first
        raise OSError("storage error: fetch 64 objects from gs://films/Images failed")

    decoded = []
    with pytest.raises(OSError, match="^storage error: fetch 64 objects from gs://films/Images"):
        for batch in decode_stream(chunks(), 64):
            decoded.append(batch)
    assert np.concatenate([indexes for indexes, _ in decoded]).tolist() == list(range(len(first)))


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_read_posters_tells_a_missing_poster_from_a_corrupt_one(cache, demo_dir, tmp_path):
    """A missing poster and a corrupt one in the same batch: each dropped and counted under
    its own reason (from a local folder, one listing of the folder finds the missing one
    before decoding)."""
    import shutil

    from job.catalogue import read_catalogue
    from job.jpegs import read_posters

    shutil.copytree(demo_dir, tmp_path / "data")
    films = read_catalogue(str(tmp_path / "data" / "IMDB_overview_genres.csv"))
    missing, corrupt = films.ids[1], films.ids[2]  # both in the first batch
    (tmp_path / "data" / "Images" / f"{missing}.jpg").unlink()
    (tmp_path / "data" / "Images" / f"{corrupt}.jpg").write_bytes(b"<html>not found</html>")

    kept, posters = read_posters(films, str(tmp_path / "data" / "Images"), 32, cache)

    assert kept.dropped["no poster"] == 1
    assert kept.dropped["unreadable poster"] == 1
    assert kept.ids == [i for i in films.ids if i not in (missing, corrupt)]
    assert len(posters) == len(films.ids) - 2


@pytest.mark.parametrize(
    "height, width, ratio",
    [(300, 150, 2), (100, 90, 1), (127, 400, 1), (260, 300, 4), (1100, 600, 8)],
)
def test_posters_decode_at_the_smallest_scale_that_keeps_both_sides(height, width, ratio):
    """libjpeg's scaled decoding (1/2, 1/4, 1/8) is chosen from the header: the smallest
    scale whose sides are both still at least 64; then an area resize to 64x64."""
    import tensorflow as tf

    from job.jpegs import decode_poster

    rows, columns = np.mgrid[0:height, 0:width]
    image = np.stack([rows * 255 // height, columns * 255 // width, (rows + columns) % 256], -1)
    blob = tf.io.encode_jpeg(image.astype(np.uint8), quality=95)

    def area_resized(decoded: tf.Tensor) -> np.ndarray:
        resized = tf.image.resize(decoded, [64, 64], method="area")
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()

    poster = decode_poster(blob, 64).numpy()
    assert poster.shape == (64, 64, 3)
    assert np.array_equal(poster, area_resized(tf.io.decode_jpeg(blob, channels=3, ratio=ratio)))
    # ... and what the full-size decode would have given, to within JPEG's own error
    full = area_resized(tf.io.decode_jpeg(blob, channels=3))
    assert np.abs(poster.astype(int) - full).mean() < 3


def test_full_bilinear_decoding_is_the_full_size_decode_and_antialiased_resize():
    """Runs from before the scaled decoding record none: predict decodes them this way."""
    import tensorflow as tf

    from job.jpegs import decode_poster

    rows, columns = np.mgrid[0:300, 0:150]
    image = np.stack([rows * 255 // 300, columns * 255 // 150, (rows + columns) % 256], -1)
    blob = tf.io.encode_jpeg(image.astype(np.uint8), quality=95)
    resized = tf.image.resize(tf.io.decode_jpeg(blob, channels=3), [64, 64], antialias=True)
    usual = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()

    assert np.array_equal(decode_poster(blob, 64, "full_bilinear").numpy(), usual)
    assert not np.array_equal(decode_poster(blob, 64).numpy(), usual)  # scaled_area


@pytest.mark.parametrize(
    "mode, options",
    [("RGB", {"progressive": True}), ("L", {}), ("CMYK", {}), ("RGB", {"subsampling": 0})],
)
def test_scaled_decoding_reads_progressive_grayscale_cmyk_and_444_jpegs(mode, options):
    """Other kinds of JPEG than the real posters' decode at a scale too, into RGB, close to
    what the full-size decode gives."""
    import io

    import tensorflow as tf
    from PIL import Image

    from job.jpegs import decode_poster

    rows, columns = np.mgrid[0:300, 0:150]
    image = np.stack([rows * 255 // 300, columns * 255 // 150, (rows + columns) % 256], -1)
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).convert(mode).save(
        buffer, format="JPEG", quality=90, **options
    )
    blob = tf.constant(buffer.getvalue())

    scaled = decode_poster(blob, 64).numpy()
    full = decode_poster(blob, 64, "full_bilinear").numpy()
    assert scaled.shape == full.shape == (64, 64, 3)
    assert np.abs(scaled.astype(int) - full).mean() < 3
