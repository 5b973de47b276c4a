"""`job.report`: the report of a real (1-epoch) run, read back as a user sees it, and
runs compared; and the baseline scripts and scripts/average_runs.py run on the demo data."""

from __future__ import annotations

import html
import io
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import ROOT, copy_tree, scaled
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image
from sklearn.metrics import average_precision_score

from job import storage
from job.cli import main
from job.data.catalogue import split_of
from job.errors import InputError
from job.report import (
    Film,
    compare_runs,
    examples_figure,
    format_comparison,
    load_films,
    per_genre_figure,
    write_report,
)

pytestmark = pytest.mark.slow  # trains the runs it reports on

REPORT_FILES = ["examples.png", "examples.html", "training.png", "per_genre.png"]


@pytest.fixture(scope="module")
def runs(shared_run, tmp_path_factory) -> dict[str, str]:
    """A 1-epoch cnn run and a 1-epoch lstm run on the demo data, in local folders (copies
    of the session's shared runs: the reports are written into them)."""
    root = tmp_path_factory.mktemp("report")
    folders = {}
    for model in ("cnn", "lstm"):
        folders[model] = str(root / f"{model}-run")
        shared_run(model, folders[model])
    return folders


def read_csv(url: str) -> pd.DataFrame:
    return pd.read_csv(
        io.BytesIO(storage.read_bytes(url)), dtype={"Id": str}, keep_default_na=False
    )


def check_png(url: str, min_width: int, min_height: int) -> None:
    """A PNG of a sensible size that is not blank: varied pixels, several colours."""
    image = Image.open(io.BytesIO(storage.read_bytes(url)))
    assert image.format == "PNG"
    assert min_width <= image.width <= 4000 and min_height <= image.height <= 8000, image.size
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.std() > 10, f"{url} looks blank"
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 20, f"{url}: only {len(colours)} colours"


def catalogue(demo_dir) -> pd.DataFrame:
    return pd.read_csv(demo_dir / "IMDB_overview_genres.csv", dtype=str, keep_default_na=False)


def test_report_of_a_local_run(runs, demo_dir):
    run = runs["cnn"]

    written = write_report(run, count=5, seed=3)

    assert written == [storage.join(run, name) for name in REPORT_FILES]
    check_png(storage.join(run, "examples.png"), 1000, 300)
    check_png(storage.join(run, "training.png"), 800, 300)
    check_png(storage.join(run, "per_genre.png"), 500, 300)
    page = storage.read_bytes(storage.join(run, "examples.html")).decode("utf-8")
    evaluation = read_csv(storage.join(run, "predictions.csv"))
    shown = [i for i in evaluation["Id"] if f"<h2>{i}</h2>" in page]
    assert len(shown) == 5
    assert page.count('src="data:image/jpeg;base64,') == 5
    overviews = catalogue(demo_dir).set_index("Id")["Overview"]
    for film_id in shown:
        assert html.escape(overviews[film_id]) in page
    # The same seed draws the same films; another seed other films.
    assert [film.id for film in load_films(run, None, None, 5, 3)] == shown
    assert [film.id for film in load_films(run, None, None, 5, 4)] != shown


def test_report_on_memory_with_chosen_ids_and_hostile_text(runs, demo_dir, tmp_path):
    """The run and data copied to memory://, an overview full of markup: --data and --ids."""
    root = f"memory://{tmp_path.name}"
    run, data = f"{root}/runs/cnn", f"{root}/data"
    copy_tree(demo_dir, data)
    copy_tree(Path(runs["cnn"]), run)
    evaluation = read_csv(f"{run}/predictions.csv")
    chosen = evaluation["Id"].tolist()[-1:] + evaluation["Id"].tolist()[:2]
    films = catalogue(demo_dir)
    hostile = '<script>alert("x")</script> & $\\alpha$ {braces} "quoted"'
    films.loc[films["Id"] == chosen[0], "Overview"] = hostile
    storage.write_text(f"{data}/IMDB_overview_genres.csv", films.to_csv(index=False))

    written = write_report(run, data_url=data, ids=chosen)

    assert written == [f"{run}/{name}" for name in REPORT_FILES]
    page = storage.read_bytes(f"{run}/examples.html").decode("utf-8")
    # Exactly the chosen films, in the order asked.
    assert page.count("<h2>") == 3 and all(f"<h2>{i}</h2>" in page for i in chosen)
    assert sorted(chosen, key=lambda i: page.index(f"<h2>{i}</h2>")) == chosen
    assert html.escape(hostile) in page and "<script>" not in page
    check_png(f"{run}/examples.png", 1000, 300)
    for name in ("training.png", "per_genre.png"):
        check_png(f"{run}/{name}", 500, 300)

    with pytest.raises(InputError, match="not among the run's evaluation films: nope"):
        write_report(run, data_url=data, ids=["nope"])


def test_compare_runs(runs):
    frame = compare_runs([runs["cnn"], runs["lstm"] + "/"])

    assert frame["run"].tolist() == ["cnn-run", "lstm-run"]
    assert frame["model"].tolist() == ["cnn", "lstm"]
    genres = json.loads(storage.read_bytes(f"{runs['cnn']}/config.json"))["run"]["genres"]
    assert frame.columns.tolist() == [
        "run",
        "model",
        "setting",
        "seed",
        "micro_f1",
        "macro_f1",
        "mAP",
        "micro_f1_at_0.5",
        "label_prior_micro_f1",
        *[f"f1_{g}" for g in genres],
    ]
    assert frame["seed"].tolist() == [42, 42]
    assert frame["setting"].str.split("#").str[0].tolist() == ["cnn/tuned", "lstm/tuned"]
    for row, model in enumerate(("cnn", "lstm")):
        metrics = json.loads(storage.read_bytes(f"{runs[model]}/metrics.json"))
        tuned = metrics["tuned_thresholds"]
        assert frame.loc[row, "micro_f1"] == tuned["micro_f1"]
        assert frame.loc[row, "mAP"] == tuned["mAP"]
        assert frame.loc[row, "micro_f1_at_0.5"] == metrics["threshold_0.5"]["micro_f1"]
        assert frame.loc[row, "label_prior_micro_f1"] == metrics["label_prior_micro_f1"]
        assert frame.loc[row, f"f1_{genres[0]}"] == tuned["per_genre"][genres[0]]["f1"]
    text = format_comparison(frame)
    assert "cnn-run" in text and "lstm-run" in text and genres[-1] in text
    assert f"{frame.loc[0, 'micro_f1']:.3f}" in text


@pytest.mark.parametrize("script", ["baseline_tfidf.py", "baseline_colour.py"])
def test_baseline_scripts_print_their_scores(script, demo_dir):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), str(demo_dir)],
        capture_output=True,
        text=True,
        timeout=scaled(300),
        cwd=ROOT,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    figures = json.loads(lines[0])
    for key in (
        "micro_f1",
        "macro_f1",
        "mAP",
        "micro_f1_at_0.5",
        "macro_f1_at_0.5",
        "label_prior_micro_f1",
    ):
        assert 0 <= figures[key] <= 1, (key, figures)
    sizes = figures["films"]
    assert sizes["evaluation"] > 0 and sizes["validation"] > 0
    assert sum(sizes.values()) == len(catalogue(demo_dir))
    # The demo's posters and words tell the genres: both baselines beat the label prior.
    assert figures["micro_f1"] > figures["label_prior_micro_f1"]


@pytest.mark.parametrize(
    ("colour_features", "names"),
    [
        ("histogram", ["tfidf", "colour", "joint"]),
        ("statistics", ["colour_statistics", "joint_statistics"]),
    ],
)
def test_job_regression_baseline_writes_a_run_a_regression_on_the_split_seed_films(
    demo_dir, tmp_path, colour_features, names
):
    """scripts/baseline_job_regression.py with SPLIT_SEED=7: a JSON line and a run folder
    a regression, each scoring exactly the evaluation films of split seed 7 as it printed."""
    done = subprocess.run(
        [sys.executable, "scripts/baseline_job_regression.py", str(demo_dir), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=scaled(300),
        cwd=ROOT,
        env={
            **os.environ,
            "SPLIT_SEED": "7",
            "COLOUR_FEATURES": colour_features,
            "PYTHONPATH": str(ROOT / "scripts"),
        },
    )

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [line["baseline"] for line in lines] == [f"job_regression_{n}" for n in names]
    ids = catalogue(demo_dir)["Id"].tolist()
    split = split_of(ids, 7, 0.1, 0.1)
    evaluation = [i for i, s in zip(ids, split, strict=True) if s == "evaluation"]
    assert split_of(ids, 42, 0.1, 0.1).tolist() != split.tolist()
    for name, line in zip(names, lines, strict=True):
        assert line["split_seed"] == 7
        assert line["films"]["evaluation"] == len(evaluation)
        folder = tmp_path / f"regression-{name.replace('_', '-')}"
        predictions = pd.read_csv(folder / "predictions.csv", dtype={"Id": str})
        assert predictions["Id"].tolist() == evaluation
        tuned = json.loads((folder / "metrics.json").read_text())["tuned_thresholds"]
        assert round(tuned["micro_f1"], 4) == line["micro_f1"]
        assert round(tuned["mAP"], 4) == line["mAP"]
        # The demo's posters and words tell the genres: every regression beats the prior.
        assert line["micro_f1"] > line["label_prior_micro_f1"], line


def test_compare_shows_mean_and_spread_of_a_setting_run_with_several_seeds(runs, tmp_path):
    """Three copies of the lstm run as seeds 1-3 of one setting (their scores set apart), and
    the cnn run alone: `genre-job compare` prints the lstm setting's mean, sample standard
    deviation and range, computed here with `statistics`, and no line for the cnn."""
    scores = {1: (0.50, 0.20, 0.30), 2: (0.54, 0.26, 0.33), 3: (0.55, 0.23, 0.36)}
    copies = []
    for seed, (micro, macro, average_precision) in scores.items():
        copy = tmp_path / f"lstm-seed{seed}"
        copy_tree(Path(runs["lstm"]), str(copy))
        config = json.loads((copy / "config.json").read_text())
        metrics = json.loads((copy / "metrics.json").read_text())
        config["seed"], config["output"] = seed, str(copy)
        tuned = metrics["tuned_thresholds"]
        tuned["micro_f1"], tuned["macro_f1"], tuned["mAP"] = micro, macro, average_precision
        (copy / "config.json").write_text(json.dumps(config))
        (copy / "metrics.json").write_text(json.dumps(metrics))
        copies.append(str(copy))

    result = CliRunner().invoke(main, ["compare", runs["cnn"], *copies], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = "Repeated settings: mean +- standard deviation [min, max] over their runs"
    assert lines.count(header) == 1
    (spread_line,) = [line for line in lines if " runs  micro_f1 " in line]
    columns = list(zip(*scores.values(), strict=True))
    expected = "  ".join(
        f"{name} {statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"
        f" [{min(values):.3f}, {max(values):.3f}]"
        for name, values in zip(("micro_f1", "macro_f1", "mAP"), columns, strict=True)
    )
    assert spread_line.startswith("lstm/tuned#") and spread_line.endswith(f"  3 runs  {expected}")
    # Each run's own row shows its seed and the setting it shares.
    setting = spread_line.split()[0]
    assert sum(setting in line for line in lines) == 4  # 3 run rows and the spread line


def drawn(figure):
    """The figure laid out as in its PNG, so that its texts' extents are real."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def test_per_genre_figures_sit_past_their_bars_and_nothing_covers_them():
    genres = ["Action", "Comedy", "Drama", "Horror"]
    per_genre = {g: {"f1": f1, "support": n} for g, f1, n in zip(
        genres, [1.0, 0.0, 0.62, 0.91], [12, 0, 40, 7], strict=True)}  # fmt: skip
    metrics = {"tuned_thresholds": {"per_genre": per_genre, "micro_f1": 0.6, "macro_f1": 0.5}}

    figure = per_genre_figure(metrics)

    renderer = drawn(figure)
    axes = figure.axes[0]
    assert axes.get_legend() is None
    bars = axes.patches
    labels = [t for t in axes.texts if "n=" in t.get_text()]
    assert [t.get_text() for t in labels] == ["1.00  n=12", "0.00  n=0", "0.62  n=40", "0.91  n=7"]
    axes_box = axes.get_window_extent(renderer)
    for bar, label in zip(bars, labels, strict=True):
        box = label.get_window_extent(renderer)
        assert box.x0 >= bar.get_window_extent(renderer).x1  # outside the bar, to its right
        assert box.x1 <= axes_box.x1  # and inside the plot, even for an F1 of 1


@pytest.mark.parametrize("count", [1, 3, 12])
def test_examples_title_clears_the_first_film(count):
    films = [
        Film(id=f"tt{i:07d}", overview="An overview.", poster=None, jpeg=None,
             true=["Drama"], predicted=[("Drama", 0.9)])
        for i in range(count)
    ]  # fmt: skip

    figure = examples_figure(films)

    renderer = drawn(figure)
    title = figure._suptitle.get_window_extent(renderer)
    first_id = next(t for t in figure.axes[1].texts if t.get_text() == "tt0000000")
    assert title.y0 > first_id.get_window_extent(renderer).y1


def test_average_runs_scores_the_mean_of_the_runs_probabilities(runs, demo_dir, tmp_path):
    """scripts/average_runs.py over the cnn run, the lstm run and the TF-IDF baseline's run
    folder (its predictions.csv, written for this): each run's mAP is the one its
    metrics.json holds, and the average's is scikit-learn's over the mean of the CSVs'
    probabilities (the cnn and lstm as one group, the baseline as the other)."""
    baseline = tmp_path / "baseline-tfidf"
    script = [sys.executable, str(ROOT / "scripts" / "baseline_tfidf.py")]
    done = subprocess.run(
        [*script, str(demo_dir), str(baseline)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    groups = [f"{runs['cnn']},{runs['lstm']}", str(baseline)]

    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "average_runs.py"), *groups],
        capture_output=True,
        text=True,
        timeout=scaled(300),
        cwd=ROOT,
    )

    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    frames = {
        run: read_csv(f"{run}/predictions.csv").set_index("Id").sort_index()
        for run in (runs["cnn"], runs["lstm"], str(baseline))
    }
    first = next(iter(frames.values()))
    assert line["films"] == len(first)
    for run, frame in frames.items():
        assert frame.index.tolist() == first.index.tolist()  # the same evaluation films
        saved = json.loads(storage.read_bytes(f"{run}/metrics.json"))["tuned_thresholds"]
        assert line["mAP_each"][run] == round(saved["mAP"], 4)  # the CSV keeps the order
    genres = [c for c in first.columns if c.startswith("prob_")]
    truth = np.array([[g[5:] in t.split("|") for g in genres] for t in first["true_genres"]])
    probs = {run: frame[genres].to_numpy() for run, frame in frames.items()}
    mean = ((probs[runs["cnn"]] + probs[runs["lstm"]]) / 2 + probs[str(baseline)]) / 2
    with_positives = truth.any(axis=0)
    expected = average_precision_score(truth[:, with_positives], mean[:, with_positives])
    assert line["mAP"] == pytest.approx(expected, abs=1e-4)
