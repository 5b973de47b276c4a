"""The end of a run: thresholds tuned on validation, scores on evaluation, outputs written.

Outputs: model.keras, saved_model/ (the same model for TF Serving), thresholds.json,
predictions.csv and metrics.json. Order matters: everything is uploaded (each file in one
piece), then config.json, then `_SUCCESS` last, so a reader that sees `_SUCCESS` sees a
complete run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from job import storage
from job.config import TrainConfig
from job.data import pipeline
from job.data.catalogue import Catalogue
from job.errors import refused_writes
from job.model import metrics
from job.model.networks import build_for, inference_model, poster_input
from job.predict import predictions_frame
from job.progress import Progress
from job.storage.lock import LOCK_NAME
from job.train.callbacks import PredictProgress
from job.train.runfolder import SUCCESS

log = logging.getLogger(__name__)

SAVED_MODEL = "saved_model"  # beside model.keras: what TF Serving and Vertex AI serve


def clear_output(output: str) -> None:
    """--overwrite: start from empty, but for our own lock."""
    for relative in storage.list_files(output):
        if relative != LOCK_NAME:
            storage.remove(storage.join(output, relative))


def export_saved_model(model: keras.Model, folder: Path) -> None:
    """`model` as a SavedModel for TF Serving and Vertex AI's prebuilt containers: its
    `serving_default` signature takes the model's own named inputs (Poster: float32
    (n, 64, 64, 3) in [0, 1]; Overview: string (n, 1)) and returns {"probabilities":
    float32 (n, genres)}, in config.json's genre order."""
    names = [tensor.name for tensor in model.inputs]
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs]

    def serve(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        inputs = dict(zip(names, tensors, strict=True)) if len(tensors) > 1 else tensors[0]
        return {"probabilities": model(inputs, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=specs)
    archive.write_out(str(folder), verbose=False)


def finish_run(
    config: TrainConfig,
    vectorizers: dict | None,
    films: Catalogue,
    inputs: pipeline.Inputs,
    split: np.ndarray,
    staging: Path,
    mirror: storage.Mirror,
) -> dict:
    """Scores the best checkpoint and writes the outputs; returns metrics.json's content."""
    labels = films.labels
    # A plain (single-device) model with the best weights: it predicts the same under any
    # strategy, and the saved model holds no distributed variables.
    model = build_for(config, len(films.genres), vectorizers)
    # The checkpoint holds the trained model's weights (it shares its layers with `model`).
    poster_input(model, config.augment, config.seed).load_weights(
        staging / "checkpoints" / "best.weights.h5"
    )

    def probabilities(name: str) -> np.ndarray:
        dataset = pipeline.make_dataset(
            pipeline.take(inputs, split == name), labels[split == name], 256, False, config.seed
        )
        with Progress(f"predict {name} films", int((split == name).sum())) as progress:
            counted = [PredictProgress(progress, 256)]
            return model.predict(dataset, verbose=0, callbacks=counted)  # (films, genres)

    validation, evaluation = split == "validation", split == "evaluation"
    validation_probs = probabilities("validation")
    evaluation_probs = probabilities("evaluation")
    thresholds, scores = score_evaluation(
        config.model,
        films.genres,
        (labels[validation], validation_probs),
        (labels[evaluation], evaluation_probs),
        metrics.label_prior_micro_f1(labels[split == "train"], labels[evaluation]),
    )
    evaluation_ids = [i for i, e in zip(films.ids, evaluation, strict=True) if e]
    predictions = predictions_frame(
        evaluation_ids, evaluation_probs, thresholds, films.genres, labels[evaluation]
    )
    write_outputs(
        staging, inference_model(model, vectorizers), films.genres, thresholds, scores, predictions
    )
    with refused_writes(config.output, PermissionError):
        mirror.sync()
        storage.write_text(storage.join(config.output, "config.json"), config.to_json())
        storage.write_text(storage.join(config.output, SUCCESS), "")
    log.info(
        "outputs written to %s (predictions: %s)",
        config.output,
        storage.join(config.output, "predictions.csv"),
    )
    return scores


def score_evaluation(
    model: str,
    genres: list[str],
    validation: tuple[np.ndarray, np.ndarray],
    evaluation: tuple[np.ndarray, np.ndarray],
    label_prior: float,
) -> tuple[np.ndarray, dict]:
    """Thresholds tuned on the validation films' (labels, probabilities), and metrics.json's
    scores of the evaluation films' with them."""
    thresholds = metrics.tune_thresholds(*validation)
    labels, probs = evaluation
    scores = {
        "model": model,
        "evaluation_films": len(labels),
        "tuned_thresholds": metrics.score(labels, probs, thresholds, genres),
        "threshold_0.5": metrics.score(labels, probs, 0.5, genres),
        "label_prior_micro_f1": label_prior,
    }
    tuned = scores["tuned_thresholds"]
    log.info(
        "evaluation: micro-F1 %.3f macro-F1 %.3f mAP %.3f (at 0.5: micro-F1 %.3f; "
        "label prior %.3f)",
        tuned["micro_f1"],
        tuned["macro_f1"],
        tuned["mAP"],
        scores["threshold_0.5"]["micro_f1"],
        label_prior,
    )
    return thresholds, scores


def write_outputs(
    staging: Path,
    exported: keras.Model,
    genres: list[str],
    thresholds: np.ndarray,
    scores: dict,
    predictions: pd.DataFrame,
) -> None:
    """model.keras, saved_model/, thresholds.json, predictions.csv and metrics.json into the
    local staging folder."""
    exported.save(staging / "model.keras")
    export_saved_model(exported, staging / SAVED_MODEL)
    (staging / "thresholds.json").write_text(
        json.dumps(dict(zip(genres, thresholds.tolist(), strict=True)), indent=2)
    )
    (staging / "predictions.csv").write_text(predictions.to_csv(index=False))
    (staging / "metrics.json").write_text(json.dumps(scores, indent=2))
