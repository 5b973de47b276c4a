"""Command-line surfaces as a user types them: demo-data, train with renamed files, other
split fractions, separate checkpoint and TensorBoard folders and `--recipe seed`, then
report and compare on that run. Outputs checked against literal values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import copy_tree
from runcheck import catalogue_truth, check_values, read_csv

from job import storage
from job.cli import main

DEMO_HEADER = ["Id", "Genre", "Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def flagged_run(tmp_path_factory) -> tuple[Path, Path]:
    """demo-data into renamed files, then one cnn epoch with every placement flag."""
    root = tmp_path_factory.mktemp("cli")
    demo = root / "demo"
    result = invoke("demo-data", "--output", demo, "--films", "120", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"120 films: {demo}\n"
    data = root / "data"
    (data / "films.csv").parent.mkdir()
    (demo / "IMDB_overview_genres.csv").rename(data / "films.csv")
    (demo / "Images").rename(data / "posters")
    output = root / "run"
    result = invoke(
        "train", "--model", "cnn", "--data", data, "--csv", "films.csv", "--images", "posters",
        "--output", output, "--checkpoint-dir", root / "ckpt", "--tensorboard-dir", root / "tb",
        "--recipe", "seed", "--epochs", "1", "--seed", "3", "--split-seed", "7",
        "--validation-fraction", "0.2", "--evaluation-fraction", "0.25",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, output


def test_demo_data_writes_the_real_datasets_format(flagged_run):
    root, _ = flagged_run
    frame = pd.read_csv(root / "data" / "films.csv", dtype=str, keep_default_na=False)
    assert frame.columns.tolist() == [*DEMO_HEADER, "Overview"]
    assert frame["Id"].tolist() == [f"tt9{n:06d}" for n in range(120)]
    assert set(frame[DEMO_HEADER[2:]].to_numpy().ravel()) == {"0", "1"}
    posters = sorted(p.name for p in (root / "data" / "posters").iterdir())
    assert posters == [f"tt9{n:06d}.jpg" for n in range(120)]


def test_train_flags_reach_the_run(flagged_run):
    root, output = flagged_run
    config = json.loads((output / "config.json").read_text())
    # --recipe seed: the course notebook's settings
    assert {k: config[k] for k in ("learning_rate", "constant_epochs", "lr_decay")} == {
        "learning_rate": 1e-4,
        "constant_epochs": 10,
        "lr_decay": 0.01,
    }
    assert (config["early_stopping"], config["class_weight"], config["augment"]) == (
        0,
        "none",
        True,
    )
    assert config["run"]["precision_policy"] == "float32"
    assert read_csv(f"{output}/history.csv")["learning_rate"].tolist() == [pytest.approx(1e-4)]
    # --split-seed 7 and the fractions: the split of the README's rule
    truth = catalogue_truth(config)
    assert (config["seed"], config["split_seed"]) == (3, 7)
    assert config["run"]["split_sizes"] == {
        name: int((truth["split"] == name).sum()) for name in ("train", "validation", "evaluation")
    }
    assert config["run"]["split_sizes"]["evaluation"] > 0.15 * 120
    check_values(str(output), config)  # --csv, --images: the renamed files were read
    # --checkpoint-dir and --tensorboard-dir hold what would be under --output
    assert {"checkpoints/best.weights.h5", "backup/training_metadata.json"} <= set(
        storage.list_files(str(root / "ckpt"))
    )
    logs = storage.list_files(str(root / "tb"))
    assert any(f.startswith("train/events") for f in logs)
    assert any(f.startswith("validation/events") for f in logs)
    tops = {f.split("/")[0] for f in storage.list_files(str(output))}
    assert not tops & {"checkpoints", "backup", "tensorboard"}


def test_report_through_the_cli(flagged_run):
    _, output = flagged_run
    result = invoke("report", "--run", output, "--count", "3", "--seed", "1")

    assert result.exit_code == 0, result.output
    names = ["examples.png", "examples.html", "training.png", "per_genre.png"]
    assert result.stdout.splitlines() == [f"{output}/{name}" for name in names]
    page = (output / "examples.html").read_text()
    assert page.count("<h2>") == 3
    evaluation = set(read_csv(f"{output}/predictions.csv")["Id"])
    shown = {part.split("</h2>")[0] for part in page.split("<h2>")[1:]}
    assert shown <= evaluation

    first = sorted(evaluation)[0]
    missing = invoke("report", "--run", output, "--ids", f"{first},nope")
    assert missing.exit_code == 3
    assert missing.output.splitlines()[-1] == "Error: not among the run's evaluation films: nope"


def test_compare_through_the_cli(flagged_run, tmp_path):
    _, output = flagged_run
    copy = tmp_path / "again"
    copy_tree(output, str(copy))

    result = invoke("compare", output, copy)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    names = ["micro_f1", "macro_f1", "mAP", "micro_f1_at_0.5", "label_prior_micro_f1"]
    header = lines[0].split()
    assert header[:2] == ["run", "model"]
    assert [header.index(name) for name in names] == sorted(header.index(n) for n in names)
    metrics = json.loads((output / "metrics.json").read_text())
    tuned = metrics["tuned_thresholds"]
    figures = [tuned["micro_f1"], tuned["macro_f1"], tuned["mAP"]]
    figures += [metrics["threshold_0.5"]["micro_f1"], metrics["label_prior_micro_f1"]]
    figures = [f"{value:.3f}" for value in figures]
    for line, name in ((lines[1], "run"), (lines[2], "again")):
        cells = line.split()
        assert cells[:2] == [name, "cnn"]
        assert cells[-len(figures) :] == figures or _in_order(figures, cells), line
    assert np.isclose(float(figures[0]), tuned["micro_f1"], atol=5e-4)

    empty = tmp_path / "empty"
    empty.mkdir()
    refused = invoke("compare", output, empty)
    assert refused.exit_code == 3
    assert refused.output.splitlines()[-1] == (
        f"Error: {empty}/config.json: no such file (point --run at a finished run)"
    )


def _in_order(wanted: list[str], cells: list[str]) -> bool:
    """Whether `wanted` appear in `cells` in this order (other columns between them)."""
    position = 0
    for cell in cells:
        if position < len(wanted) and cell == wanted[position]:
            position += 1
    return position == len(wanted)
