"""`genre-job predict`: a finished run's model.keras + thresholds.json over a catalogue."""

from __future__ import annotations

import io
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from job import cache, catalogue, jpegs, storage
from job.callbacks import PredictProgress
from job.config import TrainConfig
from job.errors import InputError, OutputError
from job.features import posters_to_float
from job.progress import Progress

log = logging.getLogger(__name__)


def predictions_frame(
    ids: list[str],
    probs: np.ndarray,
    thresholds: np.ndarray,
    genres: list[str],
    labels: np.ndarray | None = None,
) -> pd.DataFrame:
    """Id, predicted_genres (joined by |), [true_genres], prob_<Genre>... one row a film."""
    predicted = probs >= np.asarray(thresholds)[None, :]
    columns: dict[str, object] = {
        "Id": ids,
        "predicted_genres": [
            "|".join(g for g, p in zip(genres, row, strict=True) if p) for row in predicted
        ],
    }
    if labels is not None:
        columns["true_genres"] = [
            "|".join(g for g, t in zip(genres, row, strict=True) if t)
            for row in labels.astype(bool)
        ]
    for g, genre in enumerate(genres):
        columns[f"prob_{genre}"] = np.round(probs[:, g].astype(float), 6)
    return pd.DataFrame(columns)


def load_run(model_dir: str):
    """(config, keras model, thresholds) of a finished run."""
    import keras

    run_files = {}
    for name in ("config.json", "thresholds.json", "model.keras"):
        try:
            run_files[name] = storage.read_bytes(storage.join(model_dir, name))
        except FileNotFoundError:
            raise InputError(
                f"{model_dir}: not a finished run ({name} missing)",
                "point --model-dir at the --output of a finished train",
            ) from None
    config = TrainConfig.from_json(run_files["config.json"])
    thresholds = json.loads(run_files["thresholds.json"])
    model_bytes = run_files["model.keras"]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(model_bytes)
        model = keras.models.load_model(path)
    if config.poster_decoding not in jpegs.POSTER_DECODINGS:
        raise InputError(
            f"{model_dir}: posters decoded as {config.poster_decoding!r}, unknown to this version",
            "predict with the genre-job version that trained the run",
        )
    genres = config.run["genres"]
    return config, model, np.array([thresholds[g] for g in genres])


def select(
    films: catalogue.Catalogue, ids: list[str] | None, shard_index: int, shard_count: int
) -> catalogue.Catalogue:
    """The films listed by `ids` (all when None), then contiguous shard `shard_index`."""
    if ids:
        wanted = set(ids)
        films = films.subset(np.array([i in wanted for i in films.ids], dtype=bool))
    position = np.arange(len(films))
    bounds = np.linspace(0, len(films), shard_count + 1).round().astype(int)
    in_shard = (position >= bounds[shard_index]) & (position < bounds[shard_index + 1])
    return films.subset(in_shard)


def predict(
    model_dir: str,
    data: str,
    output: str,
    csv_name: str,
    images: str,
    ids: list[str] | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    batch_size: int = 256,
) -> tuple[str, int]:
    """Writes the predictions CSV; returns (where, rows). Sharded: `part-0000i.csv` under output."""
    config, model, thresholds = load_run(model_dir)
    genres = config.run["genres"]
    films = catalogue.read_catalogue(storage.join(data, csv_name), genres=genres)
    films = select(films, ids, shard_index, shard_count)
    inputs = {}  # by the exported model's input names
    if config.model != "lstm":
        films, posters = jpegs.read_posters(  # decoded as the run's were
            films,
            storage.join(data, images),
            config.image_size,
            decoding=config.poster_decoding,
        )
        inputs["Poster"] = posters  # (films, 64, 64, 3) uint8; float a batch at a time below
    if config.model != "cnn":
        has_overview = films.has_overview()
        films = films.drop(has_overview, "no overview")
        inputs = {name: array[has_overview] for name, array in inputs.items()}
        inputs["Overview"] = np.array(films.overviews, dtype=str)[:, None]  # raw (films, 1)
    if config.model != "fusion":  # single-input models take the array itself
        (inputs,) = inputs.values()
    # Posters become float32 in [0, 1] a batch at a time: held as float, all at once, they
    # would take 4x their 12 KB a film. No graph rewrites: they copy captured inputs.
    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
    dataset = dataset.map(posters_to_float).with_options(cache.no_rewrites())
    probs = np.zeros((0, len(genres)))
    if len(films):
        with Progress("predict", len(films)) as progress:
            probs = model.predict(
                dataset, verbose=0, callbacks=[PredictProgress(progress, batch_size)]
            )
    frame = predictions_frame(films.ids, probs, thresholds, genres, films.labels)
    target = storage.join(output, f"part-{shard_index:05d}.csv") if shard_count > 1 else output
    try:
        storage.write_text(target, frame.to_csv(index=False))
    except PermissionError as error:
        raise OutputError(f"{target}: cannot write ({error})") from None
    log.info("predicted %d films (dropped %s) -> %s", len(films), films.dropped, target)
    return target, len(films)


def merge_predictions(parts_url: str, output: str) -> int:
    """Joins `part-*.csv` below `parts_url`, in shard order, into one CSV; returns rows."""
    parts = [
        p for p in storage.list_files(parts_url) if p.startswith("part-") and p.endswith(".csv")
    ]
    if not parts:
        raise InputError(f"{parts_url}: no part-*.csv files to merge")
    frames = [
        pd.read_csv(
            io.BytesIO(storage.read_bytes(storage.join(parts_url, p))),
            dtype={"Id": str, "predicted_genres": str, "true_genres": str},
            keep_default_na=False,
        )
        for p in sorted(parts)
    ]
    merged = pd.concat(frames, ignore_index=True)
    storage.write_text(output, merged.to_csv(index=False))
    return len(merged)
