"""`genre-job train` and `predict` end to end, as a user runs them, on gs://, memory://
and a local folder; outputs checked where they land."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_tree, train_args
from runcheck import assert_export_reproduces_run, check_run, read_csv

from job import storage


@pytest.mark.parametrize("model", ["cnn", "lstm"])
@pytest.mark.slow
def test_train_and_predict_on_gcs(model, bucket, demo_dir, gcs_client, cli):
    data, output = f"{bucket}/imdb", f"{bucket}/runs/{model}-001"
    copy_tree(demo_dir, data)

    result = cli(*train_args(model, data, output, "--epochs", "2"))

    assert result.exit_code == 0, result.output
    assert f"predictions: {output}/predictions.csv" in result.output
    config = check_run(output, model, epochs=2)
    assert config["run"]["precision_policy"] == default_policy(model)
    assert config["jit_compile"] is False
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


@pytest.mark.slow
def test_fusion_reads_posters_and_overviews(demo_dir, tmp_path, cli):
    data, output, predicted = (str(tmp_path / name) for name in ("data", "run", "all.csv"))
    copy_tree(demo_dir, data)

    result = cli(*train_args("fusion", data, output, "--epochs", "2", "--class-weight", "sqrt"))

    assert result.exit_code == 0, result.output
    config = check_run(output, "fusion", epochs=2)
    assert config["run"]["precision_policy"] == default_policy("fusion")
    assert (tmp_path / "run" / "vocabulary.txt").exists()
    assert set(config["run"]["positive_weights"]) == set(config["run"]["genres"])
    result = cli("predict", "--model-dir", output, "--data", data, "--output", predicted)
    assert result.exit_code == 0, result.output
    assert_export_reproduces_run(output, predicted, config["run"]["films_used"])


# The quick tier's one training run (a local folder's runs: the tests below).
def test_train_on_memory(demo_dir, tmp_path, cli):
    data, output = f"memory://{tmp_path.name}/data", f"memory://{tmp_path.name}/runs/run-1"
    copy_tree(demo_dir, data)

    result = cli(*train_args("cnn", data, output, "--epochs", "1"))

    assert result.exit_code == 0, result.output
    config = check_run(output, "cnn", epochs=1)
    assert config["run"]["precision_policy"] == default_policy("cnn")


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

    # Replaced with other settings: another seed, and float32 where bfloat16 is the default.
    flags = ["--overwrite", "--seed", "7", "--no-mixed-precision"]
    replaced = cli(*train_args("cnn", data, str(output), "--epochs", "1", *flags))

    assert replaced.exit_code == 0, replaced.output
    config = check_run(str(output), "cnn", epochs=1)
    assert config["seed"] == 7 and config["run"]["precision_policy"] == "float32"


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
    logs = {}
    for cache in ("auto", "disk", "none"):
        output = tmp_path / cache
        extra = ["--cache", cache, "--cache-dir", str(tmp_path / "cache")]
        result = cli(*train_args("cnn", data, str(output), "--epochs", "1", *extra))
        assert result.exit_code == 0, result.output
        predictions[cache], logs[cache] = (output / "predictions.csv").read_text(), result.stderr
    # auto is memory here: the demo's posters take far under half of any machine's memory.
    assert "--cache auto: memory (decoded posters" in logs["auto"]
    # Decoded once into the file (12 KB a film), or decoded every epoch: the same model.
    films = json.loads((tmp_path / "disk" / "config.json").read_text())["run"]["films_used"]
    assert (tmp_path / "cache" / "posters-64.npy").stat().st_size >= films * 64 * 64 * 3
    assert predictions["disk"] == predictions["auto"] == predictions["none"]


def default_policy(model: str) -> str:
    """The precision a run gets without --mixed-precision flags: bfloat16 for the cnn where the
    CPU has bfloat16 units (AVX512-BF16 or AMX, as the kernel lists them), else float32 (on a
    CPU, bfloat16 made the LSTM slower)."""
    cpu_flags = set(Path("/proc/cpuinfo").read_text().split())
    units = cpu_flags & {"avx512_bf16", "amx_bf16"}
    return "mixed_bfloat16" if model == "cnn" and units else "float32"


@pytest.mark.slow
def test_gpu_options_on_the_cpu(demo_dir, tmp_path, cli):
    """--mixed-precision is bfloat16 compute on a CPU (float16 needs a GPU), --jit-compile
    XLA. (Unset: default_policy, checked on the other tests' runs; --no-mixed-precision: the
    overwrite test's.)"""
    output = tmp_path / "run"
    flags = ["--mixed-precision", "--jit-compile"]

    result = cli(*train_args("cnn", str(demo_dir), str(output), "--epochs", "1", *flags))

    assert result.exit_code == 0, result.output
    config = check_run(str(output), "cnn", epochs=1)
    assert config["run"]["precision_policy"] == "mixed_bfloat16"
    assert config["jit_compile"] is True
