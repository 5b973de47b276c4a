"""Bad input: a one-line error naming the file and the problem with a non-zero exit, or a
skip that is counted; never a traceback, never a half-written run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

CSV = "IMDB_overview_genres.csv"


def rewrite_csv(change):
    def apply(root: Path) -> None:
        frame = pd.read_csv(root / CSV, dtype=str, keep_default_na=False)
        change(frame).to_csv(root / CSV, index=False)

    return apply


def write_csv_bytes(data: bytes):
    def apply(root: Path) -> None:
        (root / CSV).write_bytes(data)

    return apply


def set_cell(column: str, value: str):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[3, column] = value
        return frame

    return change


# input, how to break the demo data, exit code, the error line (after "Error: <root>/")
FATAL = [
    (
        "missing CSV",
        lambda root: (root / CSV).unlink(),
        3,
        f"{CSV}: no such file (check --data and --csv)",
    ),
    ("empty CSV", write_csv_bytes(b""), 3, f"{CSV}: the file is empty"),
    (
        "header only",
        write_csv_bytes(b"Id,Genre,Action,Overview\n"),
        3,
        f"{CSV}: the CSV has a header but no films",
    ),
    (
        "no Overview column",
        rewrite_csv(lambda f: f.drop(columns=["Overview"])),
        3,
        f"{CSV}: missing column(s) Overview",
    ),
    (
        "no Id column",
        rewrite_csv(lambda f: f.drop(columns=["Id"])),
        3,
        f"{CSV}: missing column(s) Id",
    ),
    (
        "no genre columns",
        rewrite_csv(lambda f: f[["Id", "Genre", "Overview"]]),
        3,
        f"{CSV}: no genre columns (0/1 columns besides Id/Genre/Overview)",
    ),
    (
        "genre value 2",
        rewrite_csv(set_cell("Drama", "2")),
        3,
        f"{CSV}: genre column 'Drama' holds '2' on line 5; genre values must be 0 or 1",
    ),
    (
        "non-UTF-8 bytes",
        write_csv_bytes(b"Id,Overview,Drama\ntt1,caf\xe9,1\n"),
        3,
        f"{CSV}: not UTF-8 text (byte 25)",
    ),
    (
        "no posters at all",
        lambda root: shutil.rmtree(root / "Images"),
        3,
        "no train films left (0 usable films)",
    ),
]


@pytest.mark.parametrize("case, breaks, code, message", FATAL, ids=[c[0] for c in FATAL])
def test_fatal_input_is_one_clear_line(case, breaks, code, message, demo_dir, tmp_path, cli):
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    breaks(data)

    result = cli(
        "train", "--model", "cnn", "--data", data, "--output", tmp_path / "run", "--epochs", "1"
    )

    assert result.exit_code == code
    lines = result.output.strip().splitlines()
    assert lines[-1] == f"Error: {data}/{message}" or lines[-1] == f"Error: {data}: {message}"
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "_SUCCESS").exists()


def test_bad_posters_and_rows_are_skipped_and_counted(demo_dir, tmp_path, cli):
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    frame = pd.read_csv(data / CSV, dtype=str, keep_default_na=False)
    ids = frame["Id"].tolist()
    (data / "Images" / f"{ids[0]}.jpg").write_bytes(b"")  # zero bytes
    jpeg = (data / "Images" / f"{ids[1]}.jpg").read_bytes()
    (data / "Images" / f"{ids[1]}.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    (data / "Images" / f"{ids[2]}.jpg").write_bytes(b"\x89PNG\r\n\x1a\n not a jpeg")
    (data / "Images" / f"{ids[3]}.jpg").unlink()  # missing
    extra = frame.iloc[[4, 5]].copy()
    extra["Id"] = ["../../etc/passwd", "gs://elsewhere/x"]  # a path must not leave Images/
    frame = pd.concat([frame, extra, frame.iloc[[6]]])  # and one duplicate Id
    frame.to_csv(data / CSV, index=False)

    result = cli(
        "train", "--model", "cnn", "--data", data, "--output", tmp_path / "run", "--epochs", "1"
    )

    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "config.json").read_text())["run"]
    assert run["films_dropped"] == {
        "unsafe or empty Id": 2,
        "duplicate Id": 1,
        "no poster": 1,
        "poster not a readable JPEG": 3,
    }
    assert run["films_used"] == len(ids) - 4


def test_output_that_cannot_be_written(demo_dir, tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    result = cli(
        "train", "--model", "cnn", "--data", demo_dir, "--output", blocker / "run", "--epochs", "1"
    )

    assert result.exit_code == 4
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {blocker}/run: cannot write (")
