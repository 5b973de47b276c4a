"""`genre-job ensemble`: finished runs on one split (seeds of one model, or an lstm and a
cnn: a late fusion), their probabilities averaged, written as a run folder that predict,
report and compare take like any other.

Thresholds are tuned again on the validation films, and the evaluation films scored, as at
the end of a run (train.finish). Averaging three seeds of the tuned fusion scored a higher
mAP than any of them alone (docs/accuracy.md).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import keras

from job import storage
from job.config import TrainConfig
from job.data import catalogue
from job.errors import InputError, OutputError, refused_writes
from job.logs import redact
from job.predict import load_run, predictions_frame, score
from job.train.finish import score_evaluation, write_outputs
from job.train.runfolder import SUCCESS

log = logging.getLogger(__name__)

# What the members must share: the same films in the same split; those that read posters,
# decoded alike.
SHARED = ("csv", "images", "split_seed", "validation_fraction", "evaluation_fraction")
POSTER_SHARED = ("image_size", "poster_decoding")
READS = {"cnn": {"Poster"}, "lstm": {"Overview"}, "fusion": {"Poster", "Overview"}}


def average_model(models: list[keras.Model]) -> keras.Model:
    """One model taking all the members' named inputs (each member gets its own), returning
    the mean of their probabilities."""
    specs = {t.name: t for model in models for t in model.inputs}
    inputs = {n: keras.Input(t.shape[1:], dtype=t.dtype, name=n) for n, t in specs.items()}
    outputs = []
    for number, member in enumerate(models):
        member.name = f"member_{number}"  # layer names are unique within a model
        names = [t.name for t in member.inputs]
        outputs.append(
            member({n: inputs[n] for n in names} if len(names) > 1 else inputs[names[0]])
        )
    fed = inputs if len(inputs) > 1 else next(iter(inputs.values()))
    # float32 whatever the process's policy: after a bfloat16 run in the same process the
    # mean came out rounded to bfloat16.
    mean = keras.layers.Average(name="Average", dtype="float32")(outputs)
    return keras.Model(fed, mean, name="ensemble")


def ensemble_config(runs: list[str], configs: list[TrainConfig]) -> TrainConfig:
    """The config the ensemble is read and scored by: the first run's (the first that reads
    posters, if any does), its model the one reading every input the runs read (an lstm and
    a cnn together: fusion). InputError unless the runs are at least two on one split."""
    if len(runs) < 2:
        raise InputError("an ensemble needs at least two runs", "name two or more run folders")
    reads = set().union(*(READS[c.model] for c in configs))
    first = next((c for c in configs if "Poster" in READS[c.model]), configs[0])
    named = runs[configs.index(first)]
    for run, config in zip(runs, configs, strict=True):
        shared = SHARED + (POSTER_SHARED if "Poster" in READS[config.model] else ())
        for name in shared:
            if getattr(config, name) != getattr(first, name):
                raise InputError(
                    f"{run}: --{name.replace('_', '-')} {getattr(config, name)}, but "
                    f"{getattr(first, name)} in {named}",
                    "average runs trained on the same films and split",
                )
        if config.run["genres"] != first.run["genres"]:
            raise InputError(f"{run}: other genres than {named}")
    first.model = next(m for m, needs in READS.items() if needs == reads)
    return first


def refuse_output(output: str, runs: list[str]) -> None:
    """The ensemble gets a folder of its own: new or empty, and no member's."""
    inside = [r for r in runs if (output.rstrip("/") + "/").startswith(r.rstrip("/") + "/")]
    if inside:
        raise OutputError(f"{output}: inside the run {inside[0]}", "choose another --output")
    if storage.exists(output) and storage.list_files(output):
        raise OutputError(f"{output}: not empty", "choose a new folder for --output")


def write_ensemble(runs: list[str], output: str, data: str | None = None) -> dict:
    """Averages the finished `runs` into a run folder at `output`; returns its metrics."""
    refuse_output(output, runs)
    members = [load_run(run) for run in runs]
    config = ensemble_config(runs, [config for config, _, _ in members])
    data = data or config.data
    genres = config.run["genres"]
    model = average_model([member for _, member, _ in members])

    films = catalogue.read_catalogue(storage.join(data, config.csv), genres=genres)
    films = films.subset(config.split_of(films.ids) != "train")
    films, probs = score(config, model, films, storage.join(data, config.images), 256)
    split = config.split_of(films.ids)
    validation, evaluation = split == "validation", split == "evaluation"
    # The label prior needs the training films, which the ensemble does not read: the first
    # run's (runs of one split share them, up to the films a model could not read).
    prior = json.loads(storage.read_bytes(storage.join(runs[0], "metrics.json")))
    thresholds, scores = score_evaluation(
        config.model,
        genres,
        (films.labels[validation], probs[validation]),
        (films.labels[evaluation], probs[evaluation]),
        prior["label_prior_micro_f1"],
    )
    evaluation_ids = [i for i, e in zip(films.ids, evaluation, strict=True) if e]
    predictions = predictions_frame(
        evaluation_ids, probs[evaluation], thresholds, genres, films.labels[evaluation]
    )
    config.output, config.data = output, data
    config.run = {**config.run, "ensemble_of": [redact(run) for run in runs]}
    with tempfile.TemporaryDirectory() as folder, refused_writes(output, PermissionError):
        staging = Path(folder)
        write_outputs(staging, model, genres, thresholds, scores, predictions)
        storage.Mirror(staging, output).sync()
        storage.write_text(storage.join(output, "config.json"), config.to_json())
        storage.write_text(storage.join(output, SUCCESS), "")
    log.info("ensemble of %d runs written to %s", len(runs), output)
    return scores
