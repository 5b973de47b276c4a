"""`genre-job ensemble`: finished runs averaged into a run folder whose probabilities are the
mean of its runs', its thresholds tuned on the validation films, its scores as a run's;
predict, report and compare take it; runs that cannot be averaged are refused."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from runcheck import check_values, genre_matrix, read_csv, split_by_hash

from job.cli import main
from job.ensemble import average_model
from job.model.metrics import tune_thresholds

pytestmark = pytest.mark.slow  # trains two cnn runs and an lstm


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(shared_run, demo_dir, tmp_path_factory) -> dict:
    """Two 1-epoch cnn runs on the demo films, seeds 42 (the session's shared run) and 2, and
    each one's predictions for every film of the demo data; a 1-epoch lstm run (seed 42).
    (The cnn: the cheapest run that reads posters, so the ensemble's poster settings are
    checked.)"""
    folder = tmp_path_factory.mktemp("ensemble")
    found = {"folder": folder, "data": str(demo_dir)}
    shared_run("cnn", folder / "cnn-1")
    # The same --data as the shared run's (another test process's copy of the demo films):
    # compare pools runs by their settings, data included.
    data = json.loads((folder / "cnn-1" / "config.json").read_text())["data"]
    trained = invoke("train", "--model", "cnn", "--data", data, "--output",
                     folder / "cnn-2", "--epochs", 1, "--seed", 2)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    for seed in (1, 2):
        predicted = invoke("predict", "--model-dir", folder / f"cnn-{seed}", "--data", demo_dir,
                           "--output", folder / f"cnn-{seed}-all.csv")  # fmt: skip
        assert predicted.exit_code == 0, predicted.output
        found[seed] = str(folder / f"cnn-{seed}")
    found["lstm"] = str(folder / "lstm-1")
    shared_run("lstm", found["lstm"])
    return found


def probabilities(frame, genres: list[str]) -> np.ndarray:
    return frame[[f"prob_{g}" for g in genres]].to_numpy().astype(np.float32)


def test_the_ensemble_is_the_mean_of_its_runs_scored_as_a_run(runs):
    folder, data = runs["folder"], runs["data"]
    output = folder / "cnn-x2"

    result = invoke("ensemble", runs[1], runs[2], "--output", output)

    assert result.exit_code == 0, result.output
    config = json.loads((output / "config.json").read_text())
    assert config["run"]["ensemble_of"] == [runs[1], runs[2]]
    genres = config["run"]["genres"]
    metrics = json.loads((output / "metrics.json").read_text())
    tuned = metrics["tuned_thresholds"]
    assert result.stdout == (
        f"micro-F1 {tuned['micro_f1']:.3f} mAP {tuned['mAP']:.3f} on "
        f"{metrics['evaluation_films']} evaluation films\n"
        f"predictions: {output}/predictions.csv\n"
    )
    assert (output / "_SUCCESS").exists() and (output / "saved_model").is_dir()
    # predictions.csv: the runs' evaluation films, each probability the mean of the runs'
    # (and predicted_genres, true_genres and metrics.json checked against scikit-learn).
    check_values(str(output), config, data)
    own = read_csv(f"{output}/predictions.csv")
    first, second = (read_csv(f"{runs[seed]}/predictions.csv") for seed in (1, 2))
    assert own["Id"].tolist() == first["Id"].tolist() == second["Id"].tolist()
    mean = (probabilities(first, genres) + probabilities(second, genres)) / 2
    np.testing.assert_allclose(probabilities(own, genres), mean, atol=1e-6)
    assert (
        metrics["label_prior_micro_f1"]
        == json.loads((folder / "cnn-1" / "metrics.json").read_text())["label_prior_micro_f1"]
    )

    # Its model, through predict, gives every film the mean of the runs' probabilities.
    everything = folder / "cnn-x2-all.csv"
    predicted = invoke("predict", "--model-dir", output, "--data", data, "--output", everything)
    assert predicted.exit_code == 0, predicted.output
    own_all = read_csv(str(everything))
    each = [read_csv(str(folder / f"cnn-{seed}-all.csv")) for seed in (1, 2)]
    mean_all = (probabilities(each[0], genres) + probabilities(each[1], genres)) / 2
    np.testing.assert_allclose(probabilities(own_all, genres), mean_all, atol=1e-6)
    # thresholds.json: tuned on the validation films' averaged probabilities.
    validation = np.array(
        [split_by_hash(i, 42, 0.1, 0.1) == "validation" for i in own_all["Id"]], dtype=bool
    )
    labels = genre_matrix(own_all["true_genres"], genres)
    expected = tune_thresholds(labels[validation], probabilities(own_all, genres)[validation])
    thresholds = json.loads((output / "thresholds.json").read_text())
    np.testing.assert_array_equal([thresholds[g] for g in genres], expected)

    # report (no training.png: no epochs) and compare take it like a run.
    reported = invoke("report", "--run", output)
    assert reported.exit_code == 0, reported.output
    assert reported.stdout.split() == [
        f"{output}/{name}" for name in ("examples.png", "examples.html", "per_genre.png")
    ]
    compared = invoke("compare", runs[1], runs[2], output)
    assert compared.exit_code == 0, compared.output
    rows = {line.split()[0]: line.split() for line in compared.stdout.splitlines()[1:4]}
    assert rows["cnn-x2"][2] == rows["cnn-1"][2] + "/ensemble-2"
    assert f"{rows['cnn-1'][2]}  2 runs" in compared.stdout  # the runs' spread, without it


def test_an_lstm_and_a_cnn_average_into_a_fusion_of_both_inputs(runs):
    """A late fusion: each run reads its own inputs, the ensemble reads both."""
    output = runs["folder"] / "late"

    result = invoke("ensemble", runs["lstm"], runs[1], "--output", output)

    assert result.exit_code == 0, result.output
    config = json.loads((output / "config.json").read_text())
    assert config["model"] == "fusion"
    genres = config["run"]["genres"]
    check_values(str(output), config, runs["data"])
    own, lstm, cnn = (read_csv(f"{run}/predictions.csv") for run in (output, runs["lstm"], runs[1]))
    assert own["Id"].tolist() == cnn["Id"].tolist() == lstm["Id"].tolist()
    mean = (probabilities(lstm, genres) + probabilities(cnn, genres)) / 2
    np.testing.assert_allclose(probabilities(own, genres), mean, atol=1e-6)


def test_the_mean_is_float32_after_a_bfloat16_run_in_the_same_process():
    members = []
    for scale in (1.0, 3.0):
        inputs = keras.Input((2,), name="Poster")
        members.append(keras.Model(inputs, keras.layers.Rescaling(scale, dtype="float32")(inputs)))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as a cnn run leaves it
    try:
        model = average_model(members)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    values = np.array([[0.1234567, 0.7654321]], np.float32)
    np.testing.assert_array_equal(model.predict(values, verbose=0), values * 2)


def test_runs_that_cannot_be_averaged_are_refused_and_nothing_is_written(runs):
    folder = runs["folder"]
    other = folder / "cnn-other-split"
    shutil.copytree(runs[2], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"split_seed": 7}))
    taken = folder / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    refusals = [
        ([runs[1]], folder / "one", 3,
         "Error: an ensemble needs at least two runs (name two or more run folders)"),
        ([runs[1], other], folder / "two", 3,
         f"Error: {other}: --split-seed 7, but 42 in {runs[1]} "
         "(average runs trained on the same films and split)"),
        ([runs[1], runs[2]], taken, 4,
         f"Error: {taken}: not empty (choose a new folder for --output)"),
        ([runs[1], runs[2]], f"{runs[1]}/x2", 4,
         f"Error: {runs[1]}/x2: inside the run {runs[1]} (choose another --output)"),
    ]  # fmt: skip
    for members, output, code, message in refusals:
        result = invoke("ensemble", *members, "--output", output)

        assert result.exit_code == code, result.output
        assert result.stderr.strip().splitlines()[-1] == message
    assert not (folder / "one").exists() and not (folder / "two").exists()
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in (folder / "cnn-1").iterdir()) == sorted(
        p.name for p in (folder / "cnn-2").iterdir()
    )  # no x2 folder in the first run
