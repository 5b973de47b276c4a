"""Smoke tests on the real dataset (../shared/data/imdb-posters-overviews), read as it is.
Skipped with the reason when it is absent."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from runcheck import check_run

from job.data.catalogue import read_catalogue, split_of

SAMPLE = 240


def test_real_catalogue_reads_as_it_is(real_data):
    films = read_catalogue(str(real_data / "IMDB_overview_genres.csv"))

    assert len(films) == 5332
    assert len(films.genres) == 25
    assert films.genres[:3] == ["Action", "Adventure", "Animation"]
    assert films.labels.shape == (5332, 25)
    assert all(count == 0 for count in films.dropped.values())
    split = split_of(films.ids, 42, 0.1, 0.1)
    share = {name: (split == name).mean() for name in ("train", "validation", "evaluation")}
    assert 0.77 < share["train"] < 0.83 and 0.08 < share["evaluation"] < 0.12


@pytest.mark.slow
def test_each_model_trains_on_a_sample_of_real_films(real_data, tmp_path, cli):
    frame = pd.read_csv(real_data / "IMDB_overview_genres.csv", dtype=str, keep_default_na=False)
    sample = tmp_path / "sample"
    sample.mkdir()
    frame.sample(SAMPLE, random_state=0).to_csv(sample / "IMDB_overview_genres.csv", index=False)
    (sample / "Images").symlink_to(real_data / "Images")

    for model in ("cnn", "lstm"):
        output = tmp_path / model
        result = cli(
            "train",
            "--model",
            model,
            "--data",
            sample,
            "--output",
            output,
            "--epochs",
            "1",
            "--batch-size",
            "32",
        )

        assert result.exit_code == 0, result.output
        config = json.loads((output / "config.json").read_text())
        assert config["run"]["films_used"] == SAMPLE
        assert len(config["run"]["genres"]) == 25
        # predictions from the thresholds, genres from the CSV, scores as scikit-learn's
        check_run(str(output), model, epochs=1)
