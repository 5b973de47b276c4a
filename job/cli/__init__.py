"""`genre-job`: a thin click layer over the library, one module a group of commands; no
TensorFlow is imported until a command runs (`--help` answers at once)."""

from __future__ import annotations

import sys

import click

from job import logs, progress
from job.cli import predict, tools, train


@click.group()
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="GENRE_JOB_LOG_FORMAT",
    show_envvar=True,
    help="json: one JSON object a line (Cloud Logging).",
)
@click.option(
    "--progress-seconds",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    envvar="GENRE_JOB_PROGRESS_SECONDS",
    show_envvar=True,
    help="Seconds between progress lines of long work (also one at each quarter); "
    "on a terminal, a progress bar instead.",
)
@click.version_option(package_name="genre-job")
def main(log_format: str, progress_seconds: float) -> None:
    """Train and run film-genre classifiers from posters and overviews.

    \b
    Examples:
      genre-job demo-data --output demo
      genre-job train --model cnn --data demo --output runs/cnn-1 --epochs 2
      genre-job --log-format json predict --model-dir runs/cnn-1 --data demo --output p.csv
    """
    logs.configure(log_format)
    progress.configure(progress_seconds, bar=log_format == "text" and sys.stderr.isatty())


main.add_command(train.train)
main.add_command(predict.predict)
main.add_command(predict.merge_predictions)
main.add_command(tools.prepare)
main.add_command(tools.report)
main.add_command(tools.compare)
main.add_command(tools.ensemble)
main.add_command(tools.demo_data)
