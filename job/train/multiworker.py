"""Multi-node training: MultiWorkerMirroredStrategy from TF_CONFIG, with a custom loop.

Keras 3's `fit()` fails under this strategy with our versions (keras-team/keras#20585;
seen here with TF 2.21 / Keras 3.15: "ValueError: Attempt to convert a value
(PerReplica:{...}) with an unsupported type" on the first step), so the steps are written
here with `strategy.run`, TensorFlow's own collective all-reduce over gRPC between workers.
Only the chief writes the run's outputs; the other workers write to local scratch.

On Kubernetes the workers are the pods of a JobSet: TF_CONFIG is built from the JobSet's
labels (through the downward API) and its pods' stable hostnames. A SIGTERM to any worker
stops all of them after the same step: each step's all-reduce also sums a stop flag.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from job.config import TrainConfig
from job.errors import SetupError, TrainingInterrupted
from job.model.networks import make_loss
from job.storage import lock
from job.train.callbacks import StopOnSignal, best_val_loss, learning_rate_schedule, log_epoch

log = logging.getLogger(__name__)

# TensorFlow's customary gRPC port for TF_CONFIG clusters (the JobSet's containerPort).
WORKER_PORT = 2222
# Set in k8s/multinode/jobset-train.yaml from the pod's jobset.sigs.k8s.io/* annotations.
JOBSET_VARIABLES = ("JOBSET_NAME", "REPLICATED_JOB_NAME", "JOB_INDEX", "REPLICATED_JOB_REPLICAS")


def tf_config_from_jobset(env: Mapping[str, str]) -> dict | None:
    """TF_CONFIG for a pod of a JobSet (None outside one): one replicated job whose Jobs run
    one pod each; worker i is Job i, reached at <jobset>-<replicated job>-<i>-0.<subdomain>
    (the hostname JobSet gives it; the subdomain defaults to the JobSet's name)."""
    name = env.get("JOBSET_NAME")
    if not name:
        return None
    missing = [key for key in JOBSET_VARIABLES if not env.get(key)]
    if missing:
        raise SetupError(f"JobSet environment incomplete: {', '.join(missing)} not set")
    try:
        replicas = int(env["REPLICATED_JOB_REPLICAS"])
        index = int(env["JOB_INDEX"])
        pod = int(env.get("JOB_COMPLETION_INDEX") or 0)
        port = int(env.get("GENRE_JOB_WORKER_PORT") or WORKER_PORT)
    except ValueError as error:
        raise SetupError(f"JobSet environment: not a number ({error})") from None
    if pod != 0:
        raise SetupError(
            f"JobSet pod with completion index {pod}: each worker must be a Job of one pod "
            "(completions: 1; set the number of workers with the replicated job's replicas)"
        )
    if not 0 <= index < replicas:
        raise SetupError(f"JobSet environment: JOB_INDEX {index} not below {replicas} replicas")
    subdomain = env.get("JOBSET_SUBDOMAIN") or name
    prefix = f"{name}-{env['REPLICATED_JOB_NAME']}"
    workers = [f"{prefix}-{i}-0.{subdomain}:{port}" for i in range(replicas)]
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}


def set_tf_config_from_jobset() -> None:
    """Exports TF_CONFIG (read by MultiWorkerMirroredStrategy) in a JobSet's pod; a
    TF_CONFIG already set is kept."""
    if os.environ.get("TF_CONFIG"):
        return
    spec = tf_config_from_jobset(os.environ)
    if spec is not None:
        os.environ["TF_CONFIG"] = json.dumps(spec)
        log.info("TF_CONFIG from the JobSet: %s", os.environ["TF_CONFIG"])


def cluster() -> dict | None:
    """TF_CONFIG when it describes more than one task (a multi-worker job), else None."""
    spec = json.loads(os.environ.get("TF_CONFIG") or "{}")
    tasks = sum(len(v) for k, v in spec.get("cluster", {}).items() if k in ("chief", "worker"))
    return spec if tasks > 1 else None


def is_chief() -> bool:
    """The chief writes the outputs: task `chief`, or worker 0 when there is no chief."""
    spec = cluster()
    if spec is None:
        return True
    task = spec.get("task", {})
    if "chief" in spec["cluster"]:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


def fit(
    config: TrainConfig,
    learning_rate: float,
    loss_weights: np.ndarray | None,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    train_set: tf.data.Dataset,
    validation_set: tf.data.Dataset,
    global_batch: int,
    staging: Path,
    done: int,
    on_epoch_end,
) -> None:
    """Train `model` (built in `strategy.scope()`) from epoch `done`; writes best/last
    weights, backup state and history.csv into `staging`, then calls `on_epoch_end()`."""
    loss_fn = make_loss(loss_weights, reduction="none")
    optimizer = model.optimizer
    schedule = learning_rate_schedule(learning_rate, config.constant_epochs, config.lr_decay)
    train_batches = strategy.experimental_distribute_dataset(train_set)
    validation_batches = strategy.experimental_distribute_dataset(validation_set)
    reduce = tf.distribute.ReduceOp.SUM

    def counts(
        labels: tf.Tensor, probs: tf.Tensor, losses: tf.Tensor, stopping: tf.Tensor
    ) -> tf.Tensor:
        """[loss sum, films, true positives, predicted, actual, stop flag] of one replica's
        batch: summed over all workers, the flag is above 0 when any of them got SIGTERM."""
        predicted = tf.cast(probs >= 0.5, tf.float32)
        return tf.stack(
            [
                tf.reduce_sum(losses),
                tf.cast(tf.shape(labels)[0], tf.float32),
                tf.reduce_sum(predicted * labels),
                tf.reduce_sum(predicted),
                tf.reduce_sum(labels),
                stopping,
            ]
        )

    @tf.function
    def train_step(batch, stopping):
        def step(posters_or_tokens, labels, stopping):
            with tf.GradientTape() as tape:
                probs = model(posters_or_tokens, training=True)  # (batch, genres)
                losses = loss_fn(labels, probs)  # (batch,)
                loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            return counts(labels, probs, losses, stopping)

        return strategy.reduce(reduce, strategy.run(step, args=(*batch, stopping)), axis=None)

    @tf.function
    def validation_step(batch, stopping):
        def step(posters_or_tokens, labels, stopping):
            probs = model(posters_or_tokens, training=False)
            return counts(labels, probs, loss_fn(labels, probs), stopping)

        return strategy.reduce(reduce, strategy.run(step, args=(*batch, stopping)), axis=None)

    # SIGTERM, SIGINT: only noted here; the all-reduced flag stops every worker after the
    # same step (the handlers are put back only after a finished loop)
    stop = StopOnSignal(config.epochs)

    def run_epoch(batches, step_fn, phase: str, epoch: int) -> dict[str, float]:
        total = tf.zeros(5)
        for step, batch in enumerate(batches):
            lock.check_held()  # another job took the output over: stop before writing more
            reduced = step_fn(batch, tf.constant(float(stop.received is not None)))
            total += reduced[:5]
            if float(reduced[5]) > 0:
                raise interrupted(stop.received, f"{phase} step {step + 1} of epoch {epoch + 1}")
        loss_sum, films, true_positives, predicted, actual = total.numpy().tolist()
        return {
            "loss": loss_sum / max(films, 1),
            "precision": true_positives / max(predicted, 1),
            "recall": true_positives / max(actual, 1),
        }

    history = staging / "history.csv"
    best = best_val_loss(staging)
    waited = 0  # epochs since the best val_loss (early stopping)
    for epoch in range(done, config.epochs):
        stop.on_epoch_begin(epoch)
        started = time.monotonic()
        optimizer.learning_rate.assign(schedule(epoch))
        logs = run_epoch(train_batches, train_step, "training", epoch)
        validation = run_epoch(validation_batches, validation_step, "validation", epoch)
        logs.update({f"val_{k}": v for k, v in validation.items()})
        logs["learning_rate"] = schedule(epoch)
        write_history(history, epoch, logs)
        write_tensorboard(staging / "tensorboard", epoch, logs)
        model.save_weights(staging / "checkpoints" / "last.weights.h5")
        waited += 1
        if best is None or logs["val_loss"] < best:
            best, waited = logs["val_loss"], 0
            model.save_weights(staging / "checkpoints" / "best.weights.h5")
        # The same files and format as keras.callbacks.BackupAndRestore, so a rerun resumes.
        model.save_weights(staging / "backup" / "latest.weights.h5")
        (staging / "backup" / "training_metadata.json").write_text(
            json.dumps({"epoch": epoch + 1, "batch": 0})
        )
        log_epoch(epoch, config.epochs, logs, time.monotonic() - started)
        on_epoch_end()
        if config.early_stopping and waited >= config.early_stopping:
            log.info("early stopping: val_loss not better for %d epochs", waited)
            break
    stop.restore()


def interrupted(signal_number: int | None, where: str) -> TrainingInterrupted:
    """The error every worker raises after the same step (the signalled one names it)."""
    cause = (
        f"stopped by signal {signal_number}"
        if signal_number is not None
        else "stopped with the other workers (one of them received SIGTERM)"
    )
    return TrainingInterrupted(
        f"{cause} after {where}; rerun the same command to resume",
        exit_code=128 + (signal_number or signal.SIGTERM),
    )


def write_history(history: Path, epoch: int, logs: dict[str, float]) -> None:
    new = not history.exists() or not history.stat().st_size
    with history.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["epoch", *sorted(logs)])
        if new:
            writer.writeheader()
        writer.writerow({"epoch": epoch + 1, **logs})  # 1-based, as the log lines


def write_tensorboard(folder: Path, epoch: int, logs: dict[str, float]) -> None:
    """Epoch scalars in the layout Keras' TensorBoard callback uses (train/, validation/)."""
    for side, prefix in (("train", ""), ("validation", "val_")):
        writer = tf.summary.create_file_writer(str(folder / side))
        with writer.as_default():
            for name, value in logs.items():
                if name.startswith(prefix) and (prefix or not name.startswith("val_")):
                    tf.summary.scalar(f"epoch_{name.removeprefix(prefix)}", value, step=epoch)
        writer.close()
