"""Keras callbacks of a training run: schedule, epoch log lines, bucket sync, signals;
predict's progress."""

from __future__ import annotations

import csv
import io
import logging
import math
import signal
import time
from pathlib import Path

import keras

from job import lock
from job.errors import TrainingInterrupted
from job.progress import Progress
from job.storage import Mirror

log = logging.getLogger(__name__)


def learning_rate_schedule(learning_rate: float, constant_epochs: int, decay: float):
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
        log_epoch(epoch, self.epochs, logs or {}, time.monotonic() - self._started)


def log_epoch(epoch: int, epochs: int, logs: dict, seconds: float) -> None:
    """The epoch's log line (0-based `epoch`), its figures also as JSON log fields."""
    figures = {name: float(value) for name, value in logs.items()}
    text = " ".join(f"{name}={value:.4g}" for name, value in sorted(figures.items()))
    log.info(
        "epoch %d/%d %s seconds=%.1f",
        epoch + 1,
        epochs,
        text,
        seconds,
        extra={"fields": {"epoch": epoch + 1, **figures}},
    )


def best_val_loss(staging: Path) -> float | None:
    """The lowest val_loss in the staging folder's history.csv (a resumed run's), if any."""
    history = staging / "history.csv"
    if not history.exists() or not history.read_text().strip():
        return None
    losses = [float(r["val_loss"]) for r in csv.DictReader(io.StringIO(history.read_text()))]
    return min(losses) if losses else None


class History(keras.callbacks.CSVLogger):
    """history.csv with epochs numbered from 1, as the log lines number them."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch + 1, logs)


class SyncToBucket(keras.callbacks.Callback):
    """Uploads the staging folder's new files at each epoch end and at the end of training.

    Put it last: it must run after the callbacks that write into the staging folder.
    """

    def __init__(self, mirror: Mirror) -> None:
        super().__init__()
        self.mirror = mirror

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        lock.check_held()  # a job that lost its lease writes nothing more
        self.mirror.sync()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.mirror.sync()


class StopOnSignal(keras.callbacks.Callback):
    """On SIGTERM or SIGINT (Ctrl-C), stop after the current step without ending the epoch.

    Raising (rather than setting `stop_training`) keeps Keras from running the epoch-end
    callbacks, which would record the unfinished epoch as done in the backup. A second
    signal gets the handler that was there before (Ctrl-C twice: stop at once). `restore`
    puts the previous handlers back (after training: a signal must not be swallowed).
    """

    def __init__(self, epochs: int, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        super().__init__()
        self.epochs = epochs
        self.done = 0  # epochs finished
        self.received: int | None = None
        self._previous = {number: signal.signal(number, self._receive) for number in signals}

    def _receive(self, number: int, _frame: object) -> None:
        log.warning("received %s: stopping after the current step", signal.Signals(number).name)
        self.received = number
        signal.signal(number, self._previous[number])

    def restore(self) -> None:
        for number, handler in self._previous.items():
            if signal.getsignal(number) == self._receive:
                signal.signal(number, handler)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.done = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        lock.check_held()  # another job took the output over: stop before writing more
        if self.received is not None:
            raise TrainingInterrupted(
                f"stopped after epoch {self.done} of {self.epochs};"
                " rerun the same command to resume",
                exit_code=128 + self.received,
            )


class PredictProgress(keras.callbacks.Callback):
    """model.predict's batches counted in a Progress (films predicted so far)."""

    def __init__(self, progress: Progress, batch_size: int) -> None:
        super().__init__()
        self.progress, self.batch_size = progress, batch_size

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.progress.advance_to((batch + 1) * self.batch_size)
