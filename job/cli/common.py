"""The CLI's edge: domain and storage errors become one line and an exit code here, and only
here; and the options several commands share."""

from __future__ import annotations

import errno
import functools
import os
import signal
import tempfile

import click

from job import logs
from job.config import CSV_NAME, IMAGES_NAME
from job.errors import GenreJobError, TrainingInterrupted


class JobFailed(click.ClickException):
    def __init__(self, error: GenreJobError) -> None:
        hint = f" ({error.hint})" if error.hint else ""
        super().__init__(logs.redact(f"{error}{hint}"))
        self.exit_code = error.exit_code


def reports_errors(command):
    """Turn domain and storage errors into a one-line message (GENRE_JOB_DEBUG=1: traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TrainingInterrupted as error:  # SIGTERM / Ctrl-C: not a failure, one line
            hint = f" ({error.hint})" if error.hint else ""
            click.echo(logs.redact(f"{error}{hint}"), err=True)
            raise click.exceptions.Exit(error.exit_code) from None
        except KeyboardInterrupt:  # Ctrl-C outside the training steps
            click.echo("interrupted; rerun the same command to resume", err=True)
            raise click.exceptions.Exit(128 + signal.SIGINT) from None
        except GenreJobError as error:
            if os.environ.get("GENRE_JOB_DEBUG"):
                raise
            raise JobFailed(error) from None
        except OSError as error:  # storage: unreachable bucket, denied, connection reset
            if os.environ.get("GENRE_JOB_DEBUG"):
                raise
            raise click.ClickException(logs.redact(os_error_line(error))) from None

    return wrapper


def os_error_line(error: OSError) -> str:
    """One line (h5py's messages span lines); a full local disk says which and what to do."""
    message = " ".join(str(error).split())
    if error.errno == errno.ENOSPC:
        return (
            f"local disk full: {message} (the job stages checkpoints and logs under"
            f" {tempfile.gettempdir()}: free space there or set TMPDIR to a larger disk;"
            " on Kubernetes, raise the scratch volume's sizeLimit)"
        )
    return f"storage error: {message}"


def data_options(command):
    """--data, --csv and --images: where the films are."""
    command = click.option(
        "--images",
        default=IMAGES_NAME,
        show_default=True,
        help="Posters folder under --data (Images/<Id>.jpg).",
    )(command)
    command = click.option(
        "--csv", "csv_name", default=CSV_NAME, show_default=True, help="Catalogue CSV under --data."
    )(command)
    return click.option(
        "--data",
        required=True,
        envvar="GENRE_JOB_DATA",
        show_envvar=True,
        help="Dataset root: gs://bucket/path, memory://path or a folder.",
    )(command)
