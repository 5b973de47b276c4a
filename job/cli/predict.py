"""`genre-job predict` and `merge-predictions` over job.predict."""

from __future__ import annotations

import click

from job import tfstart
from job.cli.common import data_options, reports_errors


@click.command()
@click.option("--model-dir", required=True, help="The --output of a finished train.")
@data_options
@click.option(
    "--output",
    required=True,
    help="Predictions CSV URL; with --shard-count, the folder for part-NNNNN.csv.",
)
@click.option("--ids", help="Comma-separated film Ids to predict (default: all).")
@click.option("--ids-file", help="A file (path or URL) of film Ids to predict, one a line.")
@click.option(
    "--require-all",
    is_flag=True,
    help="Exit 3, writing nothing, when a film cannot be scored (no poster, unreadable "
    "poster, no overview) instead of writing its row with that status.",
)
@click.option(
    "--shard-index",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    envvar="JOB_COMPLETION_INDEX",
    show_envvar=True,
    help="This process's shard (a Kubernetes Indexed Job sets JOB_COMPLETION_INDEX).",
)
@click.option("--shard-count", type=click.IntRange(1), default=1, show_default=True)
@reports_errors
def predict(
    model_dir: str,
    data: str,
    csv_name: str,
    images: str,
    output: str,
    ids: str | None,
    ids_file: str | None,
    require_all: bool,
    shard_index: int,
    shard_count: int,
) -> None:
    """Predict genres for the films of --data with a finished run's model: one row a film.

    \b
    Examples:
      genre-job predict --model-dir gs://my-bucket/runs/cnn-1 --data gs://my-bucket/new \\
        --output gs://my-bucket/predictions/new.csv
      JOB_COMPLETION_INDEX=3 genre-job predict --model-dir runs/cnn-1 --data demo \\
        --output parts/ --shard-count 8
    """
    tfstart.load()
    from job.predict import predict as run_prediction
    from job.predict import read_ids

    if shard_index >= shard_count:
        raise click.BadParameter("must be below --shard-count", param_hint="--shard-index")
    if ids is not None and ids_file is not None:
        raise click.UsageError("give --ids or --ids-file, not both")
    wanted = None
    if ids is not None:
        wanted = [i.strip() for i in ids.split(",") if i.strip()]
        if not wanted:
            raise click.BadParameter("names no film Id", param_hint="--ids")
    elif ids_file is not None:
        wanted = read_ids(ids_file)
    target, counts = run_prediction(
        model_dir,
        data,
        output,
        csv_name,
        images,
        wanted,
        shard_index,
        shard_count,
        require_all=require_all,
    )
    by_status = ", ".join(f"{count} {status}" for status, count in counts.items())
    click.echo(f"{sum(counts.values())} predictions ({by_status or 'no films'}): {target}")


@click.command("merge-predictions")
@click.option("--input", "parts", required=True, help="Folder holding part-*.csv.")
@click.option("--output", required=True, help="The merged predictions CSV URL.")
@reports_errors
def merge_predictions(parts: str, output: str) -> None:
    """Join the shards of a sharded predict into one CSV.

    \b
    Example:
      genre-job merge-predictions --input gs://my-bucket/parts/ --output gs://my-bucket/p.csv
    """
    from job.predict import merge_predictions as merge

    click.echo(f"{merge(parts, output)} predictions: {output}")
