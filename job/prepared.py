"""A prepared dataset: the catalogue with posters already decoded and resized, written as
sharded TFRecord files, so training reads one large object per shard instead of one
request per film.

    <output>/dataset.json            manifest: genres, image size, poster decoding, shards,
                                     films, dropped
    <output>/films-00000-of-00001.tfrecord   tf.train.Example per film:
        id (bytes), overview (bytes), poster (raw uint8 size x size x 3), labels (floats)
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from job import fetching, jpegs, storage
from job.catalogue import Catalogue, read_catalogue
from job.errors import InputError
from job.progress import Progress

log = logging.getLogger(__name__)

MANIFEST = "dataset.json"
SHARD_BYTES = 128 * 2**20  # about 128 MB a shard: few requests, parallel where many


def is_prepared(data_url: str) -> bool:
    return storage.exists(storage.join(data_url, MANIFEST))


def _example(film_id: str, overview: str, poster: np.ndarray, labels: np.ndarray) -> bytes:
    feature = {
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[film_id.encode()])),
        "overview": tf.train.Feature(bytes_list=tf.train.BytesList(value=[overview.encode()])),
        "poster": tf.train.Feature(bytes_list=tf.train.BytesList(value=[poster.tobytes()])),
        "labels": tf.train.Feature(float_list=tf.train.FloatList(value=labels.tolist())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_prepared(
    data: str, output: str, csv_name: str, images: str, image_size: int = 64
) -> dict:
    """Reads, checks and decodes the dataset once; writes the shards, then the manifest."""
    films = read_catalogue(storage.join(data, csv_name))
    films, posters = jpegs.read_posters(films, storage.join(data, images), image_size)
    if not len(films):
        raise InputError(f"{data}: no films with a readable poster to prepare")
    per_film = posters[0].nbytes + 512
    shard_count = max(1, int(np.ceil(len(films) * per_film / SHARD_BYTES)))
    bounds = np.linspace(0, len(films), shard_count + 1).round().astype(int)
    shards = []
    with tempfile.TemporaryDirectory() as folder, Progress("write films", len(films)) as progress:
        for shard in range(shard_count):
            name = f"films-{shard:05d}-of-{shard_count:05d}.tfrecord"
            local = Path(folder) / name
            with tf.io.TFRecordWriter(str(local)) as writer:
                for i in range(bounds[shard], bounds[shard + 1]):
                    writer.write(
                        _example(films.ids[i], films.overviews[i], posters[i], films.labels[i])
                    )
                    progress.advance(1)
            storage.write_bytes(storage.join(output, name), local.read_bytes())
            shards.append(name)
    manifest = {
        "format": "genre-job-prepared/1",
        "source": data,
        "genres": films.genres,
        "image_size": image_size,
        "poster_decoding": jpegs.POSTER_DECODING,
        "films": len(films),
        "shards": shards,
        "films_dropped": films.dropped,
    }
    storage.write_text(storage.join(output, MANIFEST), json.dumps(manifest, indent=2))
    log.info("prepared %d films in %d shards at %s", len(films), shard_count, output)
    return manifest


def read_prepared(data: str, image_size: int) -> tuple[Catalogue, np.ndarray, str]:
    """The films, their uint8 posters (films, size, size, 3) and how those were decoded
    (jpegs.POSTER_DECODINGS; datasets prepared before it was recorded: full-size)."""
    manifest = json.loads(storage.read_bytes(storage.join(data, MANIFEST)))
    if manifest["image_size"] != image_size:
        raise InputError(
            f"{data}: prepared at {manifest['image_size']} pixels, not {image_size}",
            "run genre-job prepare again or drop --image-size",
        )
    size, genres = image_size, manifest["genres"]
    spec = {
        "id": tf.io.FixedLenFeature([], tf.string),
        "overview": tf.io.FixedLenFeature([], tf.string),
        "poster": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.FixedLenFeature([len(genres)], tf.float32),
    }
    blobs = fetching.fetch_many([storage.join(data, s) for s in manifest["shards"]])
    ids, overviews, posters, labels = [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for name, blob in zip(manifest["shards"], blobs, strict=True):
            if blob is None:
                raise InputError(f"{storage.join(data, name)}: shard missing")
            paths.append(str(Path(folder) / name))
            Path(paths[-1]).write_bytes(blob)
        records = (
            tf.data.TFRecordDataset(paths)
            .batch(1024)
            .map(lambda batch: tf.io.parse_example(batch, spec))
        )
        for batch in records.as_numpy_iterator():
            ids += [i.decode() for i in batch["id"]]
            overviews += [o.decode() for o in batch["overview"]]
            posters.append(np.frombuffer(b"".join(batch["poster"]), np.uint8))
            labels.append(batch["labels"])
    films = Catalogue(
        ids=ids,
        overviews=overviews,
        genres=genres,
        labels=np.concatenate(labels),
        dropped=dict(manifest["films_dropped"]),
    )
    decoding = manifest.get("poster_decoding", jpegs.FULL_SIZE_DECODING)
    return films, np.concatenate(posters).reshape(-1, size, size, 3), decoding
