"""`genre-job prepare`, `report`, `compare`, `ensemble` and `demo-data`."""

from __future__ import annotations

import click

from job import tfstart
from job.cli.common import data_options, reports_errors


@click.command()
@data_options
@click.option("--output", required=True, help="Where to write the prepared dataset.")
@click.option("--image-size", type=click.IntRange(8), default=64, show_default=True)
@reports_errors
def prepare(data: str, csv_name: str, images: str, output: str, image_size: int) -> None:
    """Write the dataset as TFRecord shards with posters decoded (train --data reads it).

    \b
    Examples:
      genre-job prepare --data gs://my-bucket/imdb --output gs://my-bucket/imdb-prepared
      genre-job train --model cnn --data gs://my-bucket/imdb-prepared --output runs/cnn-2
    """
    tfstart.load()
    from job.data.prepared import write_prepared

    manifest = write_prepared(data, output, csv_name, images, image_size)
    click.echo(f"{manifest['films']} films in {len(manifest['shards'])} shards: {output}")


@click.command()
@click.option("--run", "run_url", required=True, help="A finished run's folder URL.")
@click.option("--data", "data_url", help="Dataset root; default: the run's config.json.")
@click.option("--ids", help="Comma-separated evaluation Ids to show (default: a sample).")
@click.option("--count", type=click.IntRange(1), default=12, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Draws the sample.")
@reports_errors
def report(run_url: str, data_url: str | None, ids: str | None, count: int, seed: int) -> None:
    """Write examples.png/.html, training.png and per_genre.png into a finished run.

    \b
    Examples:
      genre-job report --run gs://my-bucket/runs/cnn-1
      genre-job report --run runs/cnn-1 --ids 101,102,103
    """
    from job.report import write_report

    wanted = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
    for url in write_report(run_url, data_url, wanted, count, seed):
        click.echo(url)


@click.command()
@click.argument("runs", nargs=-1, required=True)
@reports_errors
def compare(runs: tuple[str, ...]) -> None:
    """Scores of finished runs side by side (evaluation films, tuned thresholds).

    \b
    Example:
      genre-job compare gs://my-bucket/runs/cnn-1 gs://my-bucket/runs/fusion-1
    """
    from job.report import compare_runs, format_comparison

    click.echo(format_comparison(compare_runs(list(runs))), nl=False)


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--output", required=True, help="The ensemble's run folder: new or empty.")
@click.option("--data", "data_url", help="Dataset root; default: the runs' config.json.")
@reports_errors
def ensemble(runs: tuple[str, ...], output: str, data_url: str | None) -> None:
    """Average finished runs on one split (seeds, or lstm and cnn) into one run folder.

    Its model gives each run its own inputs and returns the mean probabilities;
    thresholds are tuned again on the validation films and the evaluation films scored;
    predict, report and compare take the folder like a run's.

    \b
    Example:
      genre-job ensemble runs/fusion-s42 runs/fusion-s1 runs/fusion-s2 --output runs/fusion-x3
      genre-job predict --model-dir runs/fusion-x3 --data gs://my-bucket/new --output new.csv
    """
    tfstart.load()
    from job.ensemble import write_ensemble

    scores = write_ensemble(list(runs), output, data_url)["tuned_thresholds"]
    click.echo(f"micro-F1 {scores['micro_f1']:.3f} mAP {scores['mAP']:.3f} on "
               f"{scores['films']} evaluation films")  # fmt: skip
    click.echo(f"predictions: {output.rstrip('/')}/predictions.csv")


@click.command("demo-data")
@click.option("--output", required=True, help="Where to write the demo dataset.")
@click.option("--films", type=click.IntRange(10), default=400, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@reports_errors
def demo_data(output: str, films: int, seed: int) -> None:
    """Generate a small synthetic dataset in the real dataset's format.

    \b
    Example:
      genre-job demo-data --output demo --films 400
    """
    tfstart.load()  # posters are encoded with TensorFlow
    from job.data.demo import write_demo_data

    click.echo(f"{write_demo_data(output, films, seed)} films: {output}")
