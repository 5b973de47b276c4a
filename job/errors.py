"""Domain errors. The CLI turns each into a one-line message and its exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class GenreJobError(Exception):
    """A failure the user can act on; `hint` says how."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class SetupError(GenreJobError):
    """The job's environment is wrong (e.g. an incomplete JobSet environment): a usage error."""

    exit_code = 2


class InputError(GenreJobError):
    """The data is unusable: retrying the same command cannot help (Kubernetes fails the Job)."""

    exit_code = 3


class OutputError(GenreJobError):
    """The output location cannot be written, or already holds a finished run."""

    exit_code = 4


class TrainingInterrupted(GenreJobError):
    """SIGTERM (node drain, preemption) or SIGINT (Ctrl-C): the last finished epoch's state
    is in the bucket, a rerun resumes. The message is the whole line the CLI prints."""

    exit_code = 143  # 128 + SIGTERM: the Jobs retry it, the JobSet restarts its pods

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 143) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code  # 128 + the signal: 143 SIGTERM, 130 SIGINT


@contextlib.contextmanager
def refused_writes(url: str, *errors: type[OSError]) -> Iterator[None]:
    """Turn these errors of writing to `url` into an OutputError: retrying cannot help."""
    try:
        yield
    except errors as error:
        raise OutputError(f"{url}: cannot write ({error})") from None
