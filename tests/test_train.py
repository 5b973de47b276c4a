"""`genre-job train` and `predict` end to end, as a user runs them, on gs://, memory://
and a local folder; outputs checked where they land."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import LSTM_FAST, ROOT, copy_tree, scaled
from runcheck import check_run, read_csv

from job import storage
from job.cli import main


def train_args(model: str, data: str, output: str, *extra: str) -> list[str]:
    fast = LSTM_FAST if model in ("lstm", "fusion") else []
    return ["train", "--model", model, "--data", data, "--output", output, *fast, *extra]


@pytest.mark.parametrize("model", ["cnn", "lstm"])
@pytest.mark.slow
def test_train_and_predict_on_gcs(model, bucket, demo_dir, gcs_client, cli):
    data, output = f"{bucket}/imdb", f"{bucket}/runs/{model}-001"
    copy_tree(demo_dir, data)

    result = cli(*train_args(model, data, output, "--epochs", "2"))

    assert result.exit_code == 0, result.output
    assert f"predictions: {output}/predictions.csv" in result.output
    config = check_run(output, model, epochs=2)
    # An independent client sees the same objects in the bucket.
    blobs = {b.name for b in gcs_client.bucket(bucket[5:]).list_blobs(prefix=f"runs/{model}-001/")}
    assert f"runs/{model}-001/_SUCCESS" in blobs and f"runs/{model}-001/model.keras" in blobs
    if model == "lstm":
        assert storage.exists(f"{output}/vocabulary.txt")

    predicted = f"{bucket}/new/predictions.csv"
    result = cli("predict", "--model-dir", output, "--data", data, "--output", predicted)

    assert result.exit_code == 0, result.output
    films = config["run"]["films_used"]
    assert result.output.strip().endswith(f"{films} predictions ({films} ok): {predicted}")
    assert_export_reproduces_run(output, predicted, config["run"]["films_used"])


def assert_export_reproduces_run(output: str, predicted: str, films: int) -> None:
    """`predict` over all films with the exported model (raw inputs, vectorizer inside for
    lstm and fusion) gives the run's own evaluation probabilities and genres."""
    everything = read_csv(predicted)
    assert len(everything) == films
    evaluation = read_csv(f"{output}/predictions.csv")
    same = everything.set_index("Id").loc[evaluation["Id"]].reset_index()
    prob_columns = [c for c in evaluation.columns if c.startswith("prob_")]
    np.testing.assert_allclose(same[prob_columns], evaluation[prob_columns], atol=1e-5)
    assert same["predicted_genres"].tolist() == evaluation["predicted_genres"].tolist()


@pytest.mark.slow
def test_fusion_reads_posters_and_overviews(demo_dir, tmp_path, cli):
    data, output, predicted = (str(tmp_path / name) for name in ("data", "run", "all.csv"))
    copy_tree(demo_dir, data)

    result = cli(*train_args("fusion", data, output, "--epochs", "2", "--class-weight", "sqrt"))

    assert result.exit_code == 0, result.output
    config = check_run(output, "fusion", epochs=2)
    assert (tmp_path / "run" / "vocabulary.txt").exists()
    assert set(config["run"]["positive_weights"]) == set(config["run"]["genres"])
    result = cli("predict", "--model-dir", output, "--data", data, "--output", predicted)
    assert result.exit_code == 0, result.output
    assert_export_reproduces_run(output, predicted, config["run"]["films_used"])


# The quick tier's one training run is the cnn's (the lstm's epoch is slower).
@pytest.mark.parametrize(
    "where, model", [("memory", "cnn"), pytest.param("local", "lstm", marks=pytest.mark.slow)]
)
def test_train_on_memory_and_local_folders(where, model, demo_dir, tmp_path, cli):
    root = f"memory://{tmp_path.name}" if where == "memory" else str(tmp_path)
    data, output = f"{root}/data", f"{root}/runs/run-1"
    copy_tree(demo_dir, data)

    result = cli(*train_args(model, data, output, "--epochs", "1"))

    assert result.exit_code == 0, result.output
    check_run(output, model, epochs=1)


@pytest.fixture(scope="module")
def cnn_run(demo_dir, tmp_path_factory) -> tuple[str, Path]:
    """(data, run): one 1-epoch cnn run on the demo films for the predict tests (read-only:
    a test that changes it works on a copy)."""
    output = tmp_path_factory.mktemp("cnn") / "run"
    args = train_args("cnn", str(demo_dir), str(output), "--epochs", "1")
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
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


@pytest.mark.slow
def test_never_overwrites_a_finished_run_unless_asked(demo_dir, tmp_path, cli):
    data, output = str(tmp_path / "data"), tmp_path / "run"
    copy_tree(demo_dir, data)
    assert cli(*train_args("cnn", data, str(output), "--epochs", "1")).exit_code == 0
    model_bytes = (output / "model.keras").read_bytes()

    refused = cli(*train_args("cnn", data, str(output), "--epochs", "1"))

    assert refused.exit_code == 4
    assert refused.output.strip() == (
        f"Error: {output} already holds a finished run "
        "(choose another --output or pass --overwrite)"
    )
    assert (output / "model.keras").read_bytes() == model_bytes

    replaced = cli(
        *train_args("cnn", data, str(output), "--epochs", "1", "--overwrite", "--seed", "7")
    )

    assert replaced.exit_code == 0, replaced.output
    check_run(str(output), "cnn", epochs=1)
    assert json.loads((output / "config.json").read_text())["seed"] == 7


@pytest.mark.slow
def test_prepared_dataset_gives_the_same_predictions(demo_dir, bucket, cli):
    model = "cnn"  # the poster path is the one prepare changes (overviews are copied)
    data, prepared = f"{bucket}/imdb", f"{bucket}/imdb-prepared"
    copy_tree(demo_dir, data)
    result = cli("prepare", "--data", data, "--output", prepared)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"160 films in 1 shards: {prepared}"

    for source, output in ((data, f"{bucket}/runs/raw"), (prepared, f"{bucket}/runs/prep")):
        result = cli(*train_args(model, source, output, "--epochs", "1"))
        assert result.exit_code == 0, result.output

    manifest = json.loads(storage.read_bytes(f"{prepared}/dataset.json"))
    assert manifest["poster_decoding"] == "scaled_area"
    config = json.loads(storage.read_bytes(f"{bucket}/runs/prep/config.json"))
    assert config["poster_decoding"] == "scaled_area"  # from the manifest: predict's way
    raw, prep = (
        read_csv(f"{bucket}/runs/raw/predictions.csv"),
        read_csv(f"{bucket}/runs/prep/predictions.csv"),
    )
    assert raw["Id"].tolist() == prep["Id"].tolist()
    probs = [c for c in raw.columns if c.startswith("prob_")]
    np.testing.assert_allclose(raw[probs], prep[probs], atol=1e-5)


@pytest.mark.slow
def test_every_poster_cache_gives_the_same_run(demo_dir, tmp_path, cli):
    data = str(tmp_path / "data")
    copy_tree(demo_dir, data)
    predictions = {}
    for cache in ("memory", "disk", "none", "auto"):
        output = tmp_path / cache
        extra = ["--cache", cache, "--cache-dir", str(tmp_path / "cache")]
        result = cli(*train_args("cnn", data, str(output), "--epochs", "1", *extra))
        assert result.exit_code == 0, result.output
        predictions[cache] = (output / "predictions.csv").read_text()
    # Decoded once into the file (12 KB a film), or decoded every epoch: the same model.
    films = json.loads((tmp_path / "disk" / "config.json").read_text())["run"]["films_used"]
    assert (tmp_path / "cache" / "posters-64.npy").stat().st_size >= films * 64 * 64 * 3
    assert predictions["disk"] == predictions["memory"] == predictions["none"]
    # The last run, auto: the demo's posters take far under half of any machine's memory.
    assert "--cache auto: memory (decoded posters" in result.stderr
    assert predictions["auto"] == predictions["memory"]


@pytest.mark.parametrize(
    "model, flags, policy",
    [
        ("cnn", ["--mixed-precision", "--jit-compile"], "mixed_bfloat16"),
        ("lstm", ["--no-mixed-precision"], "float32"),
        ("cnn", [], "auto"),
        ("lstm", [], "float32"),  # the default on a CPU: bfloat16 made the LSTM slower
    ],
)
@pytest.mark.slow
def test_gpu_options_on_the_cpu(model, flags, policy, demo_dir, tmp_path, cli):
    """--mixed-precision is bfloat16 compute on a CPU (float16 needs a GPU), --jit-compile
    XLA; unset, mixed precision is on for the cnn where the CPU has bfloat16 units."""
    if policy == "auto":  # bfloat16 units: AVX512-BF16 or AMX, as the kernel lists them
        cpu_flags = set(Path("/proc/cpuinfo").read_text().split())
        policy = "mixed_bfloat16" if cpu_flags & {"avx512_bf16", "amx_bf16"} else "float32"
    output = tmp_path / "run"

    result = cli(*train_args(model, str(demo_dir), str(output), "--epochs", "1", *flags))

    assert result.exit_code == 0, result.output
    config = check_run(str(output), model, epochs=1)
    assert config["run"]["precision_policy"] == policy
    assert config["jit_compile"] is ("--jit-compile" in flags)
