"""`genre-job train`: its options (most default from --recipe) over job.train.run."""

from __future__ import annotations

import dataclasses

import click

from job import tfstart
from job.cli.common import data_options, reports_errors
from job.config import (
    CACHES,
    CLASS_WEIGHTS,
    COLOUR_FEATURES,
    EMBEDDING_INITS,
    MODELS,
    RECIPE_ALIASES,
    RECIPES,
    TEXT_FEATURES,
    TrainConfig,
)

# TrainConfig's own defaults: the options below show these, never a copy of them.
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
FRACTION = click.FloatRange(0, 0.5, min_open=True)


def setting(name: str, kind, text: str | None = None):
    """An option with TrainConfig's default for `name`."""
    return click.option(
        f"--{name.replace('_', '-')}",
        type=kind,
        default=DEFAULTS[name],
        show_default=True,
        help=text,
    )


def switch(name: str, text: str):
    """An on/off option with TrainConfig's default for `name`."""
    flag = name.replace("_", "-")
    return click.option(
        f"--{flag}/--no-{flag}", default=DEFAULTS[name], show_default=True, help=text
    )


def epochs_help() -> str:
    """--epochs' help: each recipe's epochs by model."""
    return (
        "At most this many ["
        + "; ".join(
            f"{recipe}: " + ", ".join(f"{n} {model}" for model, n in epochs.items())
            for recipe, (_, epochs) in RECIPES.items()
        )
        + "]."
    )


def recipe_help(name: str, text: str = "") -> str:
    """Help naming both recipes' values for a setting that defaults from --recipe."""
    from job.config import MODEL_RECIPES, NOTEBOOK_RECIPE, TUNED_RECIPE

    own = "".join(
        f", {model} {values[name]}"
        for (recipe, model), values in MODEL_RECIPES.items()
        if recipe == "tuned" and name in values
    )
    return f"{text} [notebook: {NOTEBOOK_RECIPE[name]}; tuned: {TUNED_RECIPE[name]}{own}]".strip()


def recipe_option(name: str, kind: click.ParamType, text: str):
    """An option whose default comes from --recipe (unset: None, filled in by TrainConfig)."""
    return click.option(f"--{name.replace('_', '-')}", type=kind, help=recipe_help(name, text))


def recipe_switch(name: str, text: str):
    """An on/off option whose default comes from --recipe (unset: None)."""
    flag = name.replace("_", "-")
    return click.option(f"--{flag}/--no-{flag}", default=None, help=recipe_help(name, text))


def rate(name: str, text: str):
    """A dropout-rate option whose default comes from --recipe."""
    return recipe_option(name, click.FloatRange(0, 1, max_open=True), text)


@click.command()
@click.option(
    "--model",
    type=click.Choice(MODELS),
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
@click.option("--epochs", type=click.IntRange(1), help=epochs_help())
@setting("batch_size", click.IntRange(1), "Per replica; the global batch is this x replicas.")
@recipe_option("learning_rate", click.FloatRange(0, min_open=True), "Adam's initial rate.")
@switch("scale_learning_rate", "Multiply the learning rate by global batch / 64.")
@recipe_option("constant_epochs", click.IntRange(0), "Epochs at the initial rate before the decay.")
@recipe_option(
    "lr_decay", click.FloatRange(0), "Learning rate x exp(-decay) per epoch after those."
)
@recipe_option(
    "early_stopping", click.IntRange(0), "Stop after N epochs without a better val_loss; 0: off."
)
@recipe_option(
    "class_weight",
    click.Choice(CLASS_WEIGHTS),
    "Weight of positive labels: (negatives/positives)^1 or ^0.5.",
)
@setting("seed", int, "Seeds shuffling, initial weights and flips.")
@setting("split_seed", int, "Seeds the split by Id: runs with the same one share their films.")
@setting("validation_fraction", FRACTION)
@setting("evaluation_fraction", FRACTION)
@recipe_switch("augment", "Random horizontal flips of training posters.")
@setting(
    "cache",
    click.Choice(CACHES),
    "Decoded posters: in memory, in a local file, or decoded again every epoch; "
    "auto: in memory when they fit in half the memory available (container limit "
    "included), else in a local file.",
)
@click.option("--cache-dir", help="--cache disk: local folder [default: a temporary one].")
@setting("max_tokens", click.IntRange(2), "lstm/fusion: vocabulary size of the vectorizer.")
@recipe_option("sequence_length", click.IntRange(1), "lstm/fusion: tokens kept per overview.")
@recipe_option(
    "embedding_init",
    click.Choice(EMBEDDING_INITS),
    "lstm/fusion: word vectors from the training overviews.",
)
@recipe_option(
    "text_features",
    click.Choice(TEXT_FEATURES),
    "lstm/fusion: a TF-IDF branch over words and word pairs beside the BiLSTM.",
)
@recipe_switch("stop_words", "lstm/fusion: the TF-IDF branch drops English stop words.")
@recipe_switch(
    "tfidf_logistic",
    "lstm/fusion with the TF-IDF branch: a logistic regression over the TF-IDF rows, fitted "
    "before training, adds its logits to the network's (a training film's from folds "
    "without it).",
)
@recipe_option(
    "colour_features",
    click.Choice(COLOUR_FEATURES),
    "cnn/fusion: the poster's colour histogram joined before the output; 'statistics': "
    "and hue, saturation, value and edge-strength histograms and an edge grid (what "
    "--colour-logistic reads then too).",
)
@recipe_switch(
    "colour_logistic",
    "cnn/fusion: a logistic regression over the posters' colour histograms (or statistics; "
    "with the fusion's TF-IDF rows: one over both), fitted before training, adds its logits "
    "to the network's (a training film's from folds without it).",
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
@switch("jit_compile", "XLA-compile the train step.")
@setting(
    "cpu_replicas",
    click.IntRange(1),
    "With no GPU: split the CPU into this many replicas (tests distribution).",
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
    from job.train.runfolder import overlap

    options["csv"] = options.pop("csv_name")
    how = overlap(options["data"], options["output"])
    if how:  # the run would be written into the dataset, or the dataset pulled into staging
        raise click.BadParameter(f"{options['output']} {how}", param_hint="--output")
    config = TrainConfig(**options)
    tfstart.load()  # after the checks above: they answer without TensorFlow
    from job.train.run import train as run_training

    scores = run_training(config)
    if scores is None:  # a multi-worker job's non-chief worker: the chief writes the run
        click.echo(f"worker finished; outputs: {config.output}")
        return
    click.echo(
        f"micro-F1 {scores['tuned_thresholds']['micro_f1']:.3f} on "
        f"{scores['evaluation_films']} evaluation films"
    )
    click.echo(f"predictions: {config.output.rstrip('/')}/predictions.csv")
