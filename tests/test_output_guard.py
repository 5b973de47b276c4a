"""`train --output` is absent, empty, or a run of this job with the same settings; anything
else is refused before a byte is written there (local folder and gs://)."""

from __future__ import annotations

import json

import pytest
from conftest import LSTM_FAST, copy_tree

from job import storage


def output_of(where: str, tmp_path, request) -> str:
    if where == "local":
        return str(tmp_path / "out")
    return f"{request.getfixturevalue('bucket')}/out"


def snapshot(url: str) -> dict[str, bytes]:
    return {f: storage.read_bytes(storage.join(url, f)) for f in storage.list_files(url)}


def assert_refused(cli, data: str, output: str, line: str, *extra: str) -> None:
    """`train --model cnn` on `output` exits 4 with `line`, and leaves it byte for byte."""
    before = snapshot(output)
    refused = cli(
        "train", "--model", "cnn", "--data", data, "--output", output, "--epochs", "1", *extra
    )  # fmt: skip
    assert refused.exit_code == 4, refused.output
    assert refused.output.strip() == line
    assert snapshot(output) == before  # no _LOCK, no config.json, nothing removed


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_a_folder_of_other_files_is_refused_and_left_alone(where, demo_dir, tmp_path, cli, request):
    data, output = str(demo_dir), output_of(where, tmp_path, request)
    storage.write_text(storage.join(output, "notes.txt"), "mine")
    storage.write_text(storage.join(output, "photos/a.jpg"), "not a poster")
    storage.write_text(storage.join(output, "photos/b.jpg"), "not a poster")
    storage.write_text(storage.join(output, "zz.csv"), "Id\n1\n")

    for extra in ([], ["--overwrite"]):  # --overwrite never deletes someone else's files
        assert_refused(
            cli,
            data,
            output,
            f"Error: {output} holds files that are not a genre-job run (notes.txt, "
            "photos/a.jpg, photos/b.jpg and 1 more) (choose another --output: absent, "
            "empty, or a run of this job)",
            *extra,
        )


@pytest.mark.slow  # trains a run
def test_a_run_with_other_settings_is_refused_on_a_folder_and_a_bucket(
    demo_dir, tmp_path, bucket, cli
):
    """The issue's case: an unfinished lstm run rerun with --model cnn. Its first run's
    output sits beside the data, with a name that starts like the data's: not inside it."""
    data, output = str(tmp_path / "films"), tmp_path / "films-run"
    copy_tree(demo_dir, data)
    lstm = ["train", "--model", "lstm", "--data", data, "--output", str(output), *LSTM_FAST]
    assert cli(*lstm, "--epochs", "1").exit_code == 0
    (output / "_SUCCESS").unlink()  # as if stopped before its end
    on_bucket = f"{bucket}/runs/lstm"
    copy_tree(output, on_bucket)

    for run in (str(output), on_bucket):  # config.json still says lstm after the refusal
        assert_refused(
            cli,
            data,
            run,
            f"Error: {run} holds a run with other settings: --model lstm there, cnn here; "
            "--learning-rate 0.001 there, 0.0001 here; --constant-epochs 0 there, 10 here; "
            "and 6 more (choose another --output, or pass --overwrite to replace that run)",
            "--seed",
            "7",
            *LSTM_FAST,
        )

    # The same command resumes; --overwrite replaces the run with the other settings.
    resumed = cli(*lstm, "--epochs", "1")
    assert resumed.exit_code == 0, resumed.output
    replaced = cli(
        "train", "--model", "cnn", "--data", data, "--output", on_bucket, "--epochs", "1",
        "--overwrite",
    )  # fmt: skip
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(storage.read_bytes(f"{on_bucket}/config.json"))["model"] == "cnn"
    assert "vocabulary.txt" not in storage.list_files(on_bucket)  # nothing of the lstm left


@pytest.mark.parametrize(
    ("data", "output", "how"),
    [
        ("{tmp}/films", "{tmp}/films", "is --data itself"),
        ("{tmp}/films", "{tmp}/films/runs/1", "is inside --data"),
        ("{tmp}/films/", "{tmp}/films/../films/run", "is inside --data"),
        ("{tmp}/films/new", "{tmp}/films", "holds --data"),
        ("gs://b/imdb", "gs://b/imdb/runs/1", "is inside --data"),
        ("gs://b/imdb", "gcs://b/imdb/", "is --data itself"),
    ],
)
def test_output_and_data_overlapping_is_a_usage_error(data, output, how, tmp_path, cli):
    data, output = data.format(tmp=tmp_path), output.format(tmp=tmp_path)
    result = cli("train", "--model", "cnn", "--data", data, "--output", output)

    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for --output: {output} {how}"
    )
    assert list(tmp_path.iterdir()) == []  # nothing created
