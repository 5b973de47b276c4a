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

from job import storage
from job.config import TrainConfig
from job.data import cache, catalogue, poster_decoding
from job.data.pipeline import posters_to_float
from job.errors import InputError, OutputError, refused_writes
from job.model import poster_features  # noqa: F401 (model.keras may hold its layers)
from job.progress import Progress
from job.train.callbacks import PredictProgress

log = logging.getLogger(__name__)

# A predictions row's `status`: scored, or why not.
STATUSES = ("ok", "no poster", "unreadable poster", "no overview")


def predictions_frame(
    ids: list[str],
    probs: np.ndarray,
    thresholds: np.ndarray,
    genres: list[str],
    labels: np.ndarray | None = None,
    status: list[str] | None = None,
) -> pd.DataFrame:
    """Id, [status], predicted_genres (joined by |), [true_genres], prob_<Genre>... one row
    a film; a film not scored has NaN probabilities (empty cells) and no predicted genres."""
    predicted = probs >= np.asarray(thresholds)[None, :]
    columns: dict[str, object] = {"Id": ids}
    if status is not None:
        columns["status"] = status
    columns["predicted_genres"] = [
        "|".join(g for g, p in zip(genres, row, strict=True) if p) for row in predicted
    ]
    if labels is not None:
        columns["true_genres"] = [
            "|".join(g for g, t in zip(genres, row, strict=True) if t)
            for row in labels.astype(bool)
        ]
    for g, genre in enumerate(genres):
        # Unrounded, in the shortest text that reads back exactly (pandas' way): rounding to
        # 6 decimals tied films and moved a mAP scored from the CSV.
        columns[f"prob_{genre}"] = probs[:, g]
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
    if config.poster_decoding not in poster_decoding.POSTER_DECODINGS:
        raise InputError(
            f"{model_dir}: posters decoded as {config.poster_decoding!r}, unknown to this version",
            "predict with the genre-job version that trained the run",
        )
    genres = config.run["genres"]
    return config, model, np.array([thresholds[g] for g in genres])


def select(
    films: catalogue.Catalogue,
    ids: list[str] | None,
    shard_index: int,
    shard_count: int,
    csv_url: str = "the CSV",
) -> catalogue.Catalogue:
    """The films listed by `ids` (all when None), then contiguous shard `shard_index`.
    An Id that is not a film of the catalogue is an InputError naming a few of them."""
    if ids is not None:
        wanted, known = set(ids), set(films.ids)
        unknown = [i for i in dict.fromkeys(ids) if i not in known]
        if unknown:
            raise InputError(
                f"{len(unknown)} of {len(wanted)} requested Ids are not films of {csv_url}:"
                f" {catalogue.some(unknown)}"
            )
        films = films.subset(np.array([i in wanted for i in films.ids], dtype=bool))
    position = np.arange(len(films))
    bounds = np.linspace(0, len(films), shard_count + 1).round().astype(int)
    in_shard = (position >= bounds[shard_index]) & (position < bounds[shard_index + 1])
    return films.subset(in_shard)


def read_ids(url: str) -> list[str]:
    """The film Ids of a file (local path or URL), one a line; blank lines are skipped and
    spaces around an Id ignored."""
    try:
        text = storage.read_bytes(url).decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{url}: no such file", "check --ids-file") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{url}: not UTF-8 text (byte {error.start})") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise InputError(f"{url}: no film Ids in the file (one a line)")
    return ids


def refuse_folder(target: str) -> None:
    """The predictions CSV must not be a folder (one already there, or a URL ending in /)."""
    fs, path = storage.filesystem(target)
    name = target.rstrip("/")
    if name != target or fs.isdir(path):
        raise OutputError(
            f"{name}: is a folder; --output names the predictions CSV file",
            f"e.g. --output {name}/predictions.csv; a folder only with --shard-count",
        )


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
    require_all: bool = False,
) -> tuple[str, dict[str, int]]:
    """Writes the predictions CSV, one row a requested film, each with its status (STATUSES;
    a film that cannot be scored has empty probabilities). Returns (where, films by status).
    Sharded: `part-0000i.csv` under output. `require_all`: any film not scored is an
    InputError instead, and nothing is written."""
    target = storage.join(output, f"part-{shard_index:05d}.csv") if shard_count > 1 else output
    refuse_folder(target)
    config, model, thresholds = load_run(model_dir)
    genres = config.run["genres"]
    csv_url = storage.join(data, csv_name)
    requested = select(
        catalogue.read_catalogue(csv_url, genres=genres), ids, shard_index, shard_count, csv_url
    )
    requested.why_dropped = {}  # (a duplicate's first row is a film to predict)
    films, probs = score(config, model, requested, storage.join(data, images), batch_size)
    status = [films.why_dropped.get(i, "ok") for i in requested.ids]
    counts = {s: status.count(s) for s in STATUSES if s in status}
    unscored = {
        reason: [i for i, s in zip(requested.ids, status, strict=True) if s == reason]
        for reason in counts
        if reason != "ok"
    }
    if require_all and unscored:
        raise InputError(
            f"{len(requested) - len(films)} of {len(requested)} films cannot be scored ("
            + "; ".join(f"{s}: {catalogue.some(i, 3)}" for s, i in unscored.items())
            + ")",
            "without --require-all they get a row with their status and no probabilities",
        )
    all_probs = np.full((len(requested), len(genres)), np.nan, dtype=probs.dtype)
    all_probs[np.array(status) == "ok"] = probs
    frame = predictions_frame(
        requested.ids, all_probs, thresholds, genres, requested.labels, status
    )
    with refused_writes(target, PermissionError):
        storage.write_text(target, frame.to_csv(index=False))
    log.info("predicted %d films %s -> %s", len(requested), counts, target)
    return target, counts


def score(
    config: TrainConfig, model, films: catalogue.Catalogue, images_url: str, batch_size: int
) -> tuple[catalogue.Catalogue, np.ndarray]:
    """(the films the model can score, their probabilities (films, genres)); the others are
    in the returned catalogue's why_dropped."""
    inputs = {}  # by the exported model's input names
    if config.model != "lstm":
        films, posters = poster_decoding.read_posters(  # decoded as the run's were
            films, images_url, config.image_size, decoding=config.poster_decoding
        )
        inputs["Poster"] = posters  # (films, 64, 64, 3) uint8; float a batch at a time below
    if config.model != "cnn":
        has_overview = films.has_overview()
        films = films.drop(has_overview, "no overview")
        inputs = {name: array[has_overview] for name, array in inputs.items()}
        inputs["Overview"] = np.array(films.overviews, dtype=str)[:, None]  # raw (films, 1)
    if config.model != "fusion":  # single-input models take the array itself
        (inputs,) = inputs.values()
    if not len(films):
        return films, np.zeros((0, len(config.run["genres"])))
    # Posters become float32 in [0, 1] a batch at a time: held as float, all at once, they
    # would take 4x their 12 KB a film. No graph rewrites: they copy captured inputs.
    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
    dataset = dataset.map(posters_to_float).with_options(cache.no_rewrites())
    with Progress("predict", len(films)) as progress:
        probs = model.predict(dataset, verbose=0, callbacks=[PredictProgress(progress, batch_size)])
    return films, probs


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
            dtype={"Id": str, "status": str, "predicted_genres": str, "true_genres": str},
            keep_default_na=False,
        )
        for p in sorted(parts)
    ]
    merged = pd.concat(frames, ignore_index=True)
    storage.write_text(output, merged.to_csv(index=False))
    return len(merged)
