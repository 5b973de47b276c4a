"""`genre-job predict` over a finished run, as a user runs it: chosen Ids and unlabelled
films, posters decoded as the run recorded, a folder that is not a finished run, and
sharded predictions merging to the single run's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, copy_tree, scaled
from runcheck import read_csv

from job import storage


@pytest.fixture(scope="module")
def cnn_run(shared_run, demo_dir, tmp_path_factory) -> tuple[str, Path]:
    """(data, run): a 1-epoch cnn run on the demo films for the predict tests (a copy of the
    session's; read-only: a test that changes it works on a copy)."""
    output = tmp_path_factory.mktemp("cnn") / "run"
    shared_run("cnn", output)
    return str(demo_dir), output


@pytest.mark.slow
def test_predict_ids_and_unlabelled_data(cnn_run, demo_dir, tmp_path, cli):
    _, output = cnn_run
    catalogue = pd.read_csv(demo_dir / "IMDB_overview_genres.csv", dtype=str)
    unlabelled = tmp_path / "new"
    copy_tree(demo_dir / "Images", str(unlabelled / "Images"))
    catalogue[["Id", "Overview"]].to_csv(unlabelled / "IMDB_overview_genres.csv", index=False)
    wanted = catalogue["Id"].tolist()[:5]

    result = cli(
        "predict",
        "--model-dir",
        output,
        "--data",
        str(unlabelled),
        "--output",
        str(tmp_path / "p.csv"),
        "--ids",
        ",".join(wanted),
    )

    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(tmp_path / "p.csv", dtype={"Id": str})
    assert predictions["Id"].tolist() == wanted
    assert "true_genres" not in predictions.columns


@pytest.mark.slow
def test_predict_decodes_posters_as_the_run_recorded(cnn_run, tmp_path, cli):
    """config.json records how the run decoded posters; predict decodes them the same way,
    full-size for runs from before that was recorded, and refuses a way it does not know."""
    import keras

    from job.data.catalogue import read_catalogue
    from job.data.poster_decoding import read_posters

    data, output = cnn_run[0], str(tmp_path / "run")
    shutil.copytree(cnn_run[1], output)  # its config.json is rewritten below
    config_path = tmp_path / "run" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["poster_decoding"] == "scaled_area"
    model = keras.models.load_model(tmp_path / "run" / "model.keras")

    def predicted_probs(name: str) -> pd.DataFrame:
        result = cli("predict", "--model-dir", output, "--data", data, "--output", tmp_path / name)
        assert result.exit_code == 0, result.output
        frame = pd.read_csv(tmp_path / name, dtype={"Id": str})
        return frame[[c for c in frame.columns if c.startswith("prob_")]]

    def model_probs(decoding: str) -> np.ndarray:
        films = read_catalogue(f"{data}/IMDB_overview_genres.csv")
        _, posters = read_posters(films, f"{data}/Images", 64, decoding=decoding)
        return model.predict(posters.astype(np.float32) / 255, verbose=0)

    scaled = predicted_probs("scaled.csv")
    np.testing.assert_allclose(scaled, model_probs("scaled_area"), atol=1e-5)
    del config["poster_decoding"]  # as a run from before it was recorded
    config_path.write_text(json.dumps(config))
    full = predicted_probs("full.csv")
    np.testing.assert_allclose(full, model_probs("full_bilinear"), atol=1e-5)
    assert np.abs(full.to_numpy() - scaled.to_numpy()).max() > 1e-4

    config_path.write_text(json.dumps({**config, "poster_decoding": "hexagonal"}))
    result = cli("predict", "--model-dir", output, "--data", data, "--output", tmp_path / "x.csv")
    assert result.exit_code == 3  # bad input
    assert result.output.splitlines()[-1] == (
        f"Error: {output}: posters decoded as 'hexagonal', unknown to this version"
        " (predict with the genre-job version that trained the run)"
    )


def test_predict_from_a_folder_that_is_not_a_finished_run(demo_dir, tmp_path, bucket, cli):
    """The first file of a finished run that is missing is named, in a folder and a bucket."""
    storage.write_text(f"{bucket}/run/config.json", "{}")  # a run stopped before its end
    for model_dir, missing in ((tmp_path, "config.json"), (f"{bucket}/run", "thresholds.json")):
        result = cli(
            "predict", "--model-dir", model_dir, "--data", demo_dir, "--output", tmp_path / "p.csv"
        )
        assert result.exit_code == 3  # bad input
        assert result.output.splitlines()[-1] == (
            f"Error: {model_dir}: not a finished run ({missing} missing)"
            " (point --model-dir at the --output of a finished train)"
        )
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow
def test_sharded_predict_merges_to_single_predict(cnn_run, tmp_path, cli):
    data, output = cnn_run
    single = tmp_path / "single.csv"
    assert cli("predict", "--model-dir", output, "--data", data, "--output", single).exit_code == 0
    # Three pods of an Indexed Job: three processes at once, one shard each.
    shards = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "job",
                "predict",
                "--model-dir",
                output,
                "--data",
                data,
                "--output",
                str(tmp_path / "parts"),
                "--shard-index",
                str(index),
                "--shard-count",
                "3",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(3)
    ]
    logs = [shard.communicate(timeout=scaled(300))[0] for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0, 0], "\n".join(logs)

    result = cli(
        "merge-predictions", "--input", tmp_path / "parts", "--output", tmp_path / "merged.csv"
    )

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        "part-00000.csv",
        "part-00001.csv",
        "part-00002.csv",
    ]
    merged, whole = read_csv(str(tmp_path / "merged.csv")), read_csv(str(single))
    assert merged.columns.tolist() == whole.columns.tolist()
    assert merged[["Id", "predicted_genres", "true_genres"]].equals(
        whole[["Id", "predicted_genres", "true_genres"]]
    )
    # Batches of another size may round the last float bit differently.
    probs = [c for c in whole.columns if c.startswith("prob_")]
    np.testing.assert_allclose(merged[probs], whole[probs], atol=1e-5)
