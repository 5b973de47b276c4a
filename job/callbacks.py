"""Keras callbacks: a training run's schedule, epoch log lines, bucket sync and SIGTERM;
predict's progress."""

from __future__ import annotations

import logging
import math
import signal
import time

import keras

from job.errors import TrainingInterrupted
from job.progress import Progress
from job.storage import Mirror

log = logging.getLogger(__name__)


def seed_schedule(learning_rate: float, constant_epochs: int, decay: float):
    """Constant for `constant_epochs`, then x exp(-decay) per epoch.

    A function of the epoch number alone, so a resumed run continues the same curve.
    """

    def schedule(epoch: int, _current: float | None = None) -> float:
        return learning_rate * math.exp(-decay * max(0, epoch - constant_epochs + 1))

    return schedule


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch: what `kubectl logs` shows."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self._started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        figures = " ".join(f"{k}={float(v):.4g}" for k, v in sorted((logs or {}).items()))
        log.info(
            "epoch %d/%d %s seconds=%.1f",
            epoch + 1,
            self.epochs,
            figures,
            time.monotonic() - self._started,
            extra={
                "fields": {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            },
        )


class SyncToBucket(keras.callbacks.Callback):
    """Uploads the staging folder's new files at each epoch end and at the end of training.

    Put it last: it must run after the callbacks that write into the staging folder.
    """

    def __init__(self, mirror: Mirror) -> None:
        super().__init__()
        self.mirror = mirror

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.mirror.sync()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.mirror.sync()


class StopOnSignal(keras.callbacks.Callback):
    """On SIGTERM, stop after the current step without ending the epoch.

    Raising (rather than setting `stop_training`) keeps Keras from running the epoch-end
    callbacks, which would record the unfinished epoch as done in the backup.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        super().__init__()
        self.received: int | None = None
        for number in signals:
            signal.signal(number, self._receive)

    def _receive(self, number: int, _frame: object) -> None:
        log.warning("received signal %d: stopping after the current step", number)
        self.received = number

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.received is not None:
            raise TrainingInterrupted(
                f"stopped by signal {self.received} in the middle of an epoch",
                "rerun the same command to resume from the last finished epoch",
            )


class PredictProgress(keras.callbacks.Callback):
    """model.predict's batches counted in a Progress (films predicted so far)."""

    def __init__(self, progress: Progress, batch_size: int) -> None:
        super().__init__()
        self.progress, self.batch_size = progress, batch_size

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.progress.advance_to((batch + 1) * self.batch_size)
