"""Progress of long work (posters decoded, films written or predicted, report files): a log
line with count/total, rate and ETA at each quarter of the total and every `interval`
seconds until the count is complete, also when nothing moved (a stall shows as a stall);
on an interactive terminal, a progress bar instead, then the last line.

    with Progress("predict", len(films)) as progress:
        for batch in batches:
            ...
            progress.advance(len(batch))

JSON logs carry the figures as fields: task, count, total, rate (a second), eta_s.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass

import click

log = logging.getLogger(__name__)


@dataclass
class Settings:
    interval: float = 30.0  # seconds between lines while the work is open
    bar: bool = False  # a progress bar on stderr instead of the lines until the end


SETTINGS = Settings()


def configure(interval: float, bar: bool) -> None:
    """Set by the CLI: --progress-seconds, and a bar when stderr is a terminal."""
    SETTINGS.interval, SETTINGS.bar = interval, bar


class Progress:
    """Counts `total` units of a task; use as a context manager, call advance/advance_to."""

    def __init__(self, task: str, total: int, unit: str = "films") -> None:
        self.task, self.total, self.unit = task, total, unit
        self.count = 0
        self._quarters = 0  # quarters of the total already logged
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._bar = None
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if self.total <= 0:
            return self
        if SETTINGS.bar:
            self._bar = click.progressbar(  # redrawn each 1% (a line a film is too many)
                length=self.total,
                label=self.task,
                file=sys.stderr,
                show_pos=True,
                update_min_steps=max(1, self.total // 100),
            )
            self._bar.__enter__()
        else:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *error: object) -> None:
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._bar.__exit__(*error)
            if self.count == self.total:  # (the bar replaced the lines: the result stays)
                self._log()

    def advance(self, count: int) -> None:
        self.advance_to(self.count + count)

    def advance_to(self, count: int) -> None:
        """`count` units done so far (a lower number than before is ignored)."""
        with self._lock:
            count = min(count, self.total)
            if count <= self.count:
                return
            if self._bar is not None:
                self._bar.update(count - self.count)
            self.count = count
            quarters = 4 * count // self.total
            if quarters > self._quarters:
                self._quarters = quarters
                if self._bar is None:
                    self._log()

    def _tick(self) -> None:
        while not self._closed.wait(SETTINGS.interval):
            with self._lock:
                if self.count < self.total:  # (done: its last line is out)
                    self._log()

    def _log(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.count / elapsed
        eta = (self.total - self.count) / rate if rate else None
        log.info(
            "%s: %d/%d %s (%d%%), %.1f %s/s, ETA %s",
            self.task,
            self.count,
            self.total,
            self.unit,
            100 * self.count // self.total,
            rate,
            self.unit,
            "unknown" if eta is None else f"{eta:.0f} s",
            extra={
                "fields": {
                    "task": self.task,
                    "count": self.count,
                    "total": self.total,
                    "rate": round(rate, 3),
                    "eta_s": None if eta is None else round(eta, 1),
                }
            },
        )
