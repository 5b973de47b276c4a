"""What a finished run gives TF Serving and Vertex AI (saved_model/), and what predict,
report and the environment settings show, on three small runs in a bucket shared by the
module's tests."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from click.testing import CliRunner
from conftest import DEMO_FILMS, copy_tree

from job import storage
from job.cli import main
from job.data import catalogue, poster_decoding

pytestmark = pytest.mark.slow  # trains the runs it serves

MODELS = ("cnn", "lstm", "fusion")


def run_cli(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(gcs_client, demo_dir, shared_run) -> dict[str, str]:
    """One finished 1-epoch run a model (the session's shared runs, with their training
    logs) in a fresh bucket, the demo data beside them."""
    bucket = f"films-{uuid.uuid4().hex[:12]}"
    gcs_client.create_bucket(bucket)
    data = f"gs://{bucket}/imdb"
    copy_tree(demo_dir, data)
    outputs = {"data": data}
    for model in MODELS:
        outputs[model] = f"gs://{bucket}/runs/{model}"
        outputs[f"{model} log"] = shared_run(model, outputs[model])
    return outputs


def read_csv(url: str) -> pd.DataFrame:
    return pd.read_csv(
        io.BytesIO(storage.read_bytes(url)), keep_default_na=False, dtype={"Id": str}
    )


def evaluation_inputs(run: str, data: str, ids: list[str]) -> dict[str, tf.Tensor]:
    """The run's evaluation films as its model takes them: Poster float32 in [0, 1],
    decoded as the run decoded, and/or Overview strings (films, 1)."""
    config = json.loads(storage.read_bytes(f"{run}/config.json"))
    films = catalogue.read_catalogue(f"{data}/{config['csv']}", config["run"]["genres"])
    films = films.subset(np.isin(films.ids, ids))
    inputs = {}
    if config["model"] != "lstm":
        kept, posters = poster_decoding.read_posters(
            films, f"{data}/{config['images']}", 64, decoding=config["poster_decoding"]
        )
        assert kept.ids == films.ids  # every evaluation film has its poster
        inputs["Poster"] = tf.constant(np.asarray(posters), tf.float32) / 255.0
    if config["model"] != "cnn":
        inputs["Overview"] = tf.constant(films.overviews)[:, None]
    assert films.ids == ids  # the run's predictions.csv keeps catalogue order
    return inputs


@pytest.mark.parametrize("model", MODELS)
def test_saved_model_serves_the_runs_own_probabilities(model, runs, tmp_path):
    run = runs[model]
    local = tmp_path / "saved_model"
    assert storage.download_tree(f"{run}/saved_model", local) >= 3  # pb, variables

    served = tf.saved_model.load(str(local)).signatures["serving_default"]

    expected_inputs = {"cnn": {"Poster"}, "lstm": {"Overview"}, "fusion": {"Poster", "Overview"}}
    assert set(served.structured_input_signature[1]) == expected_inputs[model]
    assert list(served.structured_outputs) == ["probabilities"]
    evaluation = read_csv(f"{run}/predictions.csv")
    ids = evaluation["Id"].tolist()
    probabilities = served(**evaluation_inputs(run, runs["data"], ids))["probabilities"].numpy()
    columns = [c for c in evaluation.columns if c.startswith("prob_")]
    assert probabilities.shape == (len(ids), len(columns))
    np.testing.assert_allclose(probabilities, evaluation[columns].to_numpy(), atol=1e-5)


def progress_lines(stderr: str, task: str) -> list[dict]:
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [e for e in entries if e.get("task") == task]


@pytest.mark.parametrize("model", MODELS)
def test_train_logs_its_progress(model, runs):
    sizes = json.loads(storage.read_bytes(f"{runs[model]}/config.json"))["run"]["split_sizes"]
    log = runs[f"{model} log"]

    decoding = progress_lines(log, "fetch and decode posters")
    assert (not decoding) == (model == "lstm")  # the lstm reads no posters
    for name in ("validation", "evaluation"):  # the best weights' predictions at the end
        predicted = progress_lines(log, f"predict {name} films")
        assert (predicted[-1]["count"], predicted[-1]["total"]) == (sizes[name], sizes[name])


def test_predict_and_report_log_their_progress_as_json(runs, tmp_path):
    predicted = tmp_path / "all.csv"

    quarters_only = {"GENRE_JOB_PROGRESS_SECONDS": "600"}  # (no line from the interval)
    result = run_cli(
        "--log-format", "json", "predict", "--model-dir", runs["fusion"], "--data",
        runs["data"], "--output", predicted, env=quarters_only,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    films = len(read_csv(str(predicted)))
    decoding = progress_lines(result.stderr, "fetch and decode posters")
    assert (decoding[-1]["count"], decoding[-1]["total"]) == (DEMO_FILMS, DEMO_FILMS)
    inference = progress_lines(result.stderr, "predict")
    assert [(e["count"], e["total"]) for e in inference] == [(films, films)]  # one batch
    assert inference[0]["eta_s"] == 0.0 and inference[0]["rate"] > 0

    result = run_cli("--log-format", "json", "report", "--run", runs["cnn"], env=quarters_only)

    assert result.exit_code == 0, result.output
    report = progress_lines(result.stderr, "render report")
    assert [(e["count"], e["total"]) for e in report] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_environment_sets_the_options(runs, tmp_path):
    # JOB_COMPLETION_INDEX: this process's shard, as in a Kubernetes Indexed Job.
    parts = tmp_path / "parts"
    result = run_cli(
        "predict", "--model-dir", runs["lstm"], "--output", parts, "--shard-count", 2,
        env={"JOB_COMPLETION_INDEX": "1", "GENRE_JOB_DATA": runs["data"]},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in parts.iterdir()) == ["part-00001.csv"]

    # GENRE_JOB_OUTPUT: the run folder (here a finished run, so train refuses it).
    result = run_cli(
        "train", "--model", "cnn",
        env={"GENRE_JOB_OUTPUT": runs["cnn"], "GENRE_JOB_DATA": runs["data"],
             "AIP_MODEL_DIR": ""},
    )  # fmt: skip
    assert result.exit_code == 4
    assert result.stderr.splitlines()[-1] == (
        f"Error: {runs['cnn']} already holds a finished run (choose another --output or"
        " pass --overwrite)"
    )
