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

    thresholds = metrics.tune_thresholds(labels[split == "validation"], probabilities("validation"))
    evaluation_probs = probabilities("evaluation")
    evaluation_labels = labels[split == "evaluation"]
    scores = {
        "model": config.model,
        "evaluation_films": int((split == "evaluation").sum()),
        "tuned_thresholds": metrics.score(
            evaluation_labels, evaluation_probs, thresholds, films.genres
        ),
        "threshold_0.5": metrics.score(evaluation_labels, evaluation_probs, 0.5, films.genres),
        "label_prior_micro_f1": metrics.label_prior_micro_f1(
            labels[split == "train"], evaluation_labels
        ),
    }
    tuned = scores["tuned_thresholds"]
    log.info(
        "evaluation: micro-F1 %.3f macro-F1 %.3f mAP %.3f (at 0.5: micro-F1 %.3f; "
        "label prior %.3f)",
        tuned["micro_f1"],
        tuned["macro_f1"],
        tuned["mAP"],
        scores["threshold_0.5"]["micro_f1"],
        scores["label_prior_micro_f1"],
    )

    exported = inference_model(model, vectorizers)
    exported.save(staging / "model.keras")
    export_saved_model(exported, staging / SAVED_MODEL)
    (staging / "thresholds.json").write_text(
        json.dumps(dict(zip(films.genres, thresholds.tolist(), strict=True)), indent=2)
    )
    evaluation_ids = [i for i, s in zip(films.ids, split, strict=True) if s == "evaluation"]
    frame = predictions_frame(
        evaluation_ids, evaluation_probs, thresholds, films.genres, evaluation_labels
    )
    (staging / "predictions.csv").write_text(frame.to_csv(index=False))
    (staging / "metrics.json").write_text(json.dumps(scores, indent=2))
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
