"""`genre-job`: a thin click layer over the library. Domain errors become one line and an
exit code here, and only here (3: bad input, do not retry; 4: output refused; 75: retry)."""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import tempfile

import click

from job import logs, progress, tfstart
from job.config import CACHES, CSV_NAME, IMAGES_NAME, RECIPE_ALIASES, RECIPES
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


def recipe_help(name: str, text: str = "") -> str:
    """Help naming both recipes' values for a setting that defaults from --recipe."""
    from job.config import NOTEBOOK_RECIPE, TUNED_CNN, TUNED_RECIPE

    cnn = f", cnn {TUNED_CNN[name]}" if name in TUNED_CNN else ""
    return f"{text} [notebook: {NOTEBOOK_RECIPE[name]}; tuned: {TUNED_RECIPE[name]}{cnn}]".strip()


def recipe_option(name: str, kind: click.ParamType, text: str):
    """An option whose default comes from --recipe (unset: None, filled in by TrainConfig)."""
    return click.option(f"--{name.replace('_', '-')}", type=kind, help=recipe_help(name, text))


def rate(name: str, text: str):
    """A dropout-rate option whose default comes from --recipe."""
    return recipe_option(name, click.FloatRange(0, 1, max_open=True), text)


@main.command()
@click.option(
    "--model",
    type=click.Choice(["cnn", "lstm", "fusion"]),
    required=True,
    help="cnn: posters; lstm: overviews; fusion: both.",
)
@data_options
@click.option(
    "--output",
    required=True,
    envvar=["AIP_MODEL_DIR", "GENRE_JOB_OUTPUT"],
    show_envvar=True,
    help="Run folder URL (Vertex AI sets AIP_MODEL_DIR).",
)
@click.option(
    "--checkpoint-dir",
    envvar="AIP_CHECKPOINT_DIR",
    show_envvar=True,
    help="Where checkpoints/ and backup/ go [default: --output].",
)
@click.option(
    "--tensorboard-dir",
    envvar="AIP_TENSORBOARD_LOG_DIR",
    show_envvar=True,
    help="Where TensorBoard logs go [default: --output/tensorboard].",
)
@click.option(
    "--recipe",
    type=click.Choice([*RECIPES, *RECIPE_ALIASES]),
    default="tuned",
    show_default=True,
    help="Defaults of the settings below: notebook (or seed) = the course notebook's exactly.",
)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    help="At most this many [notebook: 40 cnn, 20 lstm/fusion; tuned: 40 cnn, 15 lstm/fusion].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Per replica; the global batch is this x replicas.",
)
@recipe_option("learning_rate", click.FloatRange(0, min_open=True), "Adam's initial rate.")
@click.option(
    "--scale-learning-rate/--no-scale-learning-rate",
    default=False,
    show_default=True,
    help="Multiply the learning rate by global batch / 64.",
)
@recipe_option("constant_epochs", click.IntRange(0), "Epochs at the initial rate before the decay.")
@recipe_option(
    "lr_decay", click.FloatRange(0), "Learning rate x exp(-decay) per epoch after those."
)
@recipe_option(
    "early_stopping", click.IntRange(0), "Stop after N epochs without a better val_loss; 0: off."
)
@recipe_option(
    "class_weight",
    click.Choice(["none", "sqrt", "balanced"]),
    "Weight of positive labels: (negatives/positives)^1 or ^0.5.",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Seeds the split by Id, shuffling and initial weights.",
)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(0, 0.5, min_open=True),
    default=0.1,
    show_default=True,
)
@click.option(
    "--evaluation-fraction",
    type=click.FloatRange(0, 0.5, min_open=True),
    default=0.1,
    show_default=True,
)
@click.option(
    "--augment/--no-augment",
    default=None,
    help=recipe_help("augment", "Random horizontal flips of training posters."),
)
@click.option(
    "--cache",
    type=click.Choice(CACHES),
    default="auto",
    show_default=True,
    help="Decoded posters: in memory, in a local file, or decoded again every epoch; "
    "auto: in memory when they fit in half the memory available (container limit "
    "included), else in a local file.",
)
@click.option("--cache-dir", help="--cache disk: local folder [default: a temporary one].")
@click.option(
    "--max-tokens",
    type=click.IntRange(2),
    default=10_000,
    show_default=True,
    help="lstm/fusion: vocabulary size of the vectorizer.",
)
@recipe_option("sequence_length", click.IntRange(1), "lstm/fusion: tokens kept per overview.")
@recipe_option(
    "embedding_init",
    click.Choice(["random", "lsa"]),
    "lstm/fusion: word vectors from the training overviews.",
)
@rate("recurrent_dropout", "LSTM recurrent dropout; 0 makes it cuDNN-eligible on a GPU.")
@rate("cnn_dropout", "After each conv block.")
@rate("cnn_dense_dropout", "After each 1024-unit dense layer.")
@rate("lstm_dropout", "On the LSTMs' inputs.")
@rate("lstm_dense_dropout", "Before the LSTM's output.")
@click.option(
    "--mixed-precision/--no-mixed-precision",
    default=None,
    help="float16 (GPU) / bfloat16 (CPU) compute, float32 outputs [default: on with a GPU, "
    "and for cnn on a CPU with bfloat16 units (measured 2x faster, same accuracy)].",
)
@click.option(
    "--jit-compile/--no-jit-compile",
    default=False,
    show_default=True,
    help="XLA-compile the train step.",
)
@click.option(
    "--cpu-replicas",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="With no GPU: split the CPU into this many replicas (tests distribution).",
)
@click.option("--overwrite", is_flag=True, help="Replace a finished run at --output.")
@reports_errors
def train(**options) -> None:
    """Train a model; writes checkpoints, logs, model (model.keras and saved_model/),
    metrics and predictions to --output. Rerun the same command to resume.

    \b
    Examples:
      genre-job train --model cnn --data gs://my-bucket/imdb --output gs://my-bucket/runs/cnn-1
      GENRE_JOB_DATA=gs://my-bucket/imdb AIP_MODEL_DIR=gs://my-bucket/runs/lstm-1 \\
        genre-job train --model lstm --recipe notebook
    """
    from job.config import TrainConfig
    from job.runfolder import overlap

    options["csv"] = options.pop("csv_name")
    how = overlap(options["data"], options["output"])
    if how:  # the run would be written into the dataset, or the dataset pulled into staging
        raise click.BadParameter(f"{options['output']} {how}", param_hint="--output")
    config = TrainConfig(**options)
    tfstart.load()  # after the checks above: they answer without TensorFlow
    from job.training import train as run_training

    scores = run_training(config)
    if scores is None:  # a multi-worker job's non-chief worker: the chief writes the run
        click.echo(f"worker finished; outputs: {config.output}")
        return
    click.echo(
        f"micro-F1 {scores['tuned_thresholds']['micro_f1']:.3f} on "
        f"{scores['evaluation_films']} evaluation films"
    )
    click.echo(f"predictions: {config.output.rstrip('/')}/predictions.csv")


@main.command()
@click.option("--model-dir", required=True, help="The --output of a finished train.")
@data_options
@click.option(
    "--output",
    required=True,
    help="Predictions CSV URL; with --shard-count, the folder for part-NNNNN.csv.",
)
@click.option("--ids", help="Comma-separated film Ids to predict (default: all).")
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
    shard_index: int,
    shard_count: int,
) -> None:
    """Predict genres for the films of --data with a finished run's model.

    \b
    Examples:
      genre-job predict --model-dir gs://my-bucket/runs/cnn-1 --data gs://my-bucket/new \\
        --output gs://my-bucket/predictions/new.csv
      JOB_COMPLETION_INDEX=3 genre-job predict --model-dir runs/cnn-1 --data demo \\
        --output parts/ --shard-count 8
    """
    tfstart.load()
    from job.prediction import predict as run_prediction

    if shard_index >= shard_count:
        raise click.BadParameter("must be below --shard-count", param_hint="--shard-index")
    target, rows = run_prediction(
        model_dir,
        data,
        output,
        csv_name,
        images,
        ids.split(",") if ids else None,
        shard_index,
        shard_count,
    )
    click.echo(f"{rows} predictions: {target}")


@main.command("merge-predictions")
@click.option("--input", "parts", required=True, help="Folder holding part-*.csv.")
@click.option("--output", required=True, help="The merged predictions CSV URL.")
@reports_errors
def merge_predictions(parts: str, output: str) -> None:
    """Join the shards of a sharded predict into one CSV.

    \b
    Example:
      genre-job merge-predictions --input gs://my-bucket/parts/ --output gs://my-bucket/p.csv
    """
    from job.prediction import merge_predictions as merge

    click.echo(f"{merge(parts, output)} predictions: {output}")


@main.command()
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
    from job.prepared import write_prepared

    manifest = write_prepared(data, output, csv_name, images, image_size)
    click.echo(f"{manifest['films']} films in {len(manifest['shards'])} shards: {output}")


@main.command()
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


@main.command()
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


@main.command("demo-data")
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
    from job.demo import write_demo_data

    click.echo(f"{write_demo_data(output, films, seed)} films: {output}")
