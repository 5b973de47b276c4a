"""Bad input, one table: each row is an input and what must come of it. Either a one-line
error naming the file and the problem, with its exit code (3: bad data, 4: output
refused), or a skip counted in config.json (run.films_dropped) and logged; never a
traceback, never a half-written run, never a silently wrong model."""

from __future__ import annotations

import io
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from conftest import DEMO_FILMS, LSTM_FAST
from PIL import Image
from support.faultproxy import FaultProxy

CSV = "IMDB_overview_genres.csv"


@dataclass
class Fails:
    """Exit `code`; the last line is "Error: " + `message` ({data} and {output} filled in)."""

    code: int
    message: str
    prefix: bool = False  # the line only starts with `message` (the rest is the OS's)


@dataclass
class Skips:
    """Exit 0; config.json counts exactly these drops (empty: every film kept).

    Counted through the reader (training.load_films: what train reads before it trains)
    unless `train`: then through a whole one-epoch `genre-job train`."""

    dropped: dict[str, int] = field(default_factory=dict)
    train: bool = False


@dataclass
class Case:
    """Where the run reads and writes; a row's `breaks` changes the data or these."""

    data: str
    output: str
    root: Path
    request: pytest.FixtureRequest
    monkeypatch: pytest.MonkeyPatch

    def ids(self) -> list[str]:
        return pd.read_csv(self.root / CSV, dtype=str, keep_default_na=False)["Id"].tolist()


def rewrite_csv(change):
    def apply(case: Case) -> None:
        frame = pd.read_csv(case.root / CSV, dtype=str, keep_default_na=False)
        change(frame).to_csv(case.root / CSV, index=False)

    return apply


def write_csv_bytes(data: bytes):
    def apply(case: Case) -> None:
        (case.root / CSV).write_bytes(data)

    return apply


def set_cells(column: str, value: str, rows=(3,)):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        for row in rows:
            frame.loc[row, column] = value
        return frame

    return rewrite_csv(change)


def image(mode: str, size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    colour = {"L": 128, "RGB": (200, 40, 30), "CMYK": (10, 200, 30, 40), "P": 3}[mode]
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, fmt)
    return buffer.getvalue()


def posters(makers):
    """Replace the posters of films 0, 1, ... with make(original JPEG bytes)."""

    def apply(case: Case) -> None:
        for film_id, make in zip(case.ids(), makers, strict=False):
            path = case.root / "Images" / f"{film_id}.jpg"
            path.write_bytes(make(path.read_bytes()))

    return apply


def add_films_with_ids(film_ids: list[str]):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        extra = frame.iloc[[4] * len(film_ids)].copy()
        extra["Id"] = film_ids
        return pd.concat([frame, extra])

    return rewrite_csv(change)


# Ids that must not become a poster path: '/', '..', absolute, URL schemes, NUL, '\\'
UNSAFE_IDS = ["a/b", "../../etc/passwd", "..", "/etc/passwd", "gs://elsewhere/x", "file:x"]
UNSAFE_IDS += ["tt1\x00.jpg", "..\\x", "http://127.0.0.1/x", "~root"]
BAD_POSTERS = [
    lambda jpeg: b"",  # zero bytes
    lambda jpeg: jpeg[: len(jpeg) // 2],  # truncated
    lambda jpeg: image("RGB", (150, 300), "TIFF"),  # a format TensorFlow does not decode
    lambda jpeg: b"<html>not found</html>",  # an error page saved as the poster
]
ODD_JPEGS = [
    lambda jpeg: image("L", (150, 300)),  # grayscale: decoded to RGB, kept
    lambda jpeg: image("CMYK", (150, 300)),  # CMYK: decoded to RGB, kept
    lambda jpeg: image("RGB", (1, 1)),  # 1x1: resized, kept
    lambda jpeg: image("RGB", (150, 300), "PNG"),  # PNG named .jpg: decoded as a PNG, kept
    lambda jpeg: image("P", (150, 300), "GIF"),  # GIF named .jpg: decoded as a GIF, kept
]


def BOMB(jpeg: bytes, fmt: str = "JPEG") -> bytes:  # noqa: N802
    """A valid 100-megapixel JPEG (1 MB; a PNG: 100 KB): refused before decoding (limit 25
    megapixels)."""
    return image("L", (10_000, 10_000), fmt)


def missing_poster(case: Case) -> None:
    (case.root / "Images" / f"{case.ids()[0]}.jpg").unlink()


def data_bucket_missing(case: Case) -> None:
    case.request.getfixturevalue("gcs_server")
    case.data = "gs://no-such-bucket-for-genre-job/imdb"


def output_in_a_file(case: Case) -> None:
    blocker = case.root.parent / "a-file"
    blocker.write_text("not a folder")
    case.output = str(blocker / "run")


def output_bucket_missing(case: Case) -> None:
    case.request.getfixturevalue("gcs_server")
    case.output = "gs://no-such-bucket-for-genre-job/run"


def output_forbidden(case: Case) -> None:
    """A gs:// output the job may read but not write: 403 on uploads from a proxy."""
    server = case.request.getfixturevalue("gcs_server")
    bucket = case.request.getfixturevalue("bucket")
    proxy = FaultProxy(server).__enter__()
    case.request.addfinalizer(lambda: proxy.__exit__(None, None, None))
    proxy.forbid_writes = "runs/"
    case.monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    case.output = f"{bucket}/runs/forbidden"


def bad_csv(message: str, prefix: bool = False) -> Fails:
    return Fails(3, "{data}/" + CSV + ": " + message, prefix)


UNREADABLE = "unreadable poster"
UNSAFE = "unsafe or empty Id"
NO_TRAIN = "{data}: no train films left (0 usable films)"
FORBIDDEN = "{output}: cannot write (write {output}/_LOCK: OSError: Forbidden: "
# case, model, how the demo data is broken, what must come of it
TABLE = [
    # the catalogue CSV
    (
        "missing CSV",
        "cnn",
        lambda c: (c.root / CSV).unlink(),
        bad_csv("no such file (check --data and --csv)"),
    ),
    ("empty CSV", "cnn", write_csv_bytes(b""), bad_csv("the file is empty")),
    ("blank CSV", "cnn", write_csv_bytes(b"\n \n"), bad_csv("the file is empty")),
    (
        "header only",
        "cnn",
        write_csv_bytes(b"Id,Genre,Action,Overview\n"),
        bad_csv("the CSV has a header but no films"),
    ),
    (
        "no Overview column",
        "cnn",
        rewrite_csv(lambda f: f.drop(columns=["Overview"])),
        bad_csv("missing column(s) Overview"),
    ),
    (
        "no Id column",
        "cnn",
        rewrite_csv(lambda f: f.drop(columns=["Id"])),
        bad_csv("missing column(s) Id"),
    ),
    (
        "no genre columns",
        "cnn",
        rewrite_csv(lambda f: f[["Id", "Genre", "Overview"]]),
        bad_csv("no genre columns (0/1 columns besides Id/Genre/Overview)"),
    ),
    (
        "genre value 2",
        "cnn",
        set_cells("Drama", "2"),
        bad_csv("genre column 'Drama' holds '2' on line 5; genre values must be 0 or 1"),
    ),
    (
        "genre value yes",
        "cnn",
        set_cells("Action", "yes"),
        bad_csv("genre column 'Action' holds 'yes' on line 5; genre values must be 0 or 1"),
    ),
    (
        "genre value empty",
        "cnn",
        set_cells("Action", ""),
        bad_csv("genre column 'Action' holds '' on line 5; genre values must be 0 or 1"),
    ),
    (
        "genre value 0.5",
        "cnn",
        set_cells("Action", "0.5"),
        bad_csv("genre column 'Action' holds '0.5' on line 5; genre values must be 0 or 1"),
    ),
    (
        "non-UTF-8 bytes",
        "cnn",
        write_csv_bytes(b"Id,Overview,Drama\ntt1,caf\xe9,1\n"),
        bad_csv("not UTF-8 text (byte 25)"),
    ),
    (
        "ragged rows",
        "cnn",
        write_csv_bytes(b'Id,Overview,Drama\ntt1,"unclosed,1\n'),
        bad_csv("not a readable CSV (", prefix=True),
    ),
    # Ids: a poster path is built from the Id and must never leave Images/
    (
        "duplicate Id",
        "cnn",
        rewrite_csv(lambda f: pd.concat([f, f.iloc[[6]]])),
        Skips({"duplicate Id": 1}),
    ),
    ("unsafe Ids", "cnn", add_films_with_ids(UNSAFE_IDS), Skips({UNSAFE: len(UNSAFE_IDS)})),
    ("empty Ids", "cnn", set_cells("Id", "", rows=(2, 3)), Skips({UNSAFE: 2})),
    # overviews
    (
        "10 MB overview and empty overviews (lstm)",
        "lstm",
        lambda c: [
            set_cells("Overview", "word " * 2_000_000, rows=(5,))(c),
            set_cells("Overview", "", rows=(1, 2, 3))(c),
        ],
        Skips({"no overview": 3}),
    ),
    # posters
    ("missing poster", "cnn", missing_poster, Skips({"no poster": 1})),
    ("no posters at all", "cnn", lambda c: shutil.rmtree(c.root / "Images"), Fails(3, NO_TRAIN)),
    (
        "unreadable posters",
        "cnn",
        posters(BAD_POSTERS),
        Skips({UNREADABLE: len(BAD_POSTERS)}, train=True),
    ),
    ("grayscale, CMYK, 1x1 JPEGs, PNG, GIF", "cnn", posters(ODD_JPEGS), Skips({})),
    ("10000x10000 JPEG (bomb)", "cnn", posters([BOMB]), Skips({UNREADABLE: 1})),
    # where the data is and where the run goes
    (
        "data bucket does not exist",
        "cnn",
        data_bucket_missing,
        bad_csv("no such file (check --data and --csv)"),
    ),
    (
        "output under a file",
        "cnn",
        output_in_a_file,
        Fails(4, "{output}: cannot write (", prefix=True),
    ),
    (
        "output bucket does not exist",
        "cnn",
        output_bucket_missing,
        Fails(4, "{output}: cannot write (", prefix=True),
    ),
    ("output not writable (403)", "cnn", output_forbidden, Fails(4, FORBIDDEN, prefix=True)),
]


# A case the run must survive through a whole train trains for an epoch: slow; the others
# are counted through the reader or stop before training.
CASES = [
    pytest.param(
        *row,
        id=row[0],
        marks=[pytest.mark.slow] if isinstance(row[3], Skips) and row[3].train else [],
    )
    for row in TABLE
]


@pytest.mark.parametrize("case, model, breaks, expected", CASES)
def test_bad_input(
    case, model, breaks, expected, demo_dir, tmp_path, cli, request, monkeypatch, caplog
):
    root = tmp_path / "data"
    shutil.copytree(demo_dir, root)
    where = Case(str(root), str(tmp_path / "run"), root, request, monkeypatch)
    breaks(where)
    fast = LSTM_FAST if model == "lstm" else []
    args = ["train", "--model", model, "--data", where.data, "--output", where.output]
    if isinstance(expected, Skips):
        films = len(pd.read_csv(root / CSV, dtype=str, keep_default_na=False))
        assert films >= DEMO_FILMS
    if isinstance(expected, Skips) and not expected.train:
        from job.config import TrainConfig
        from job.train.run import load_films

        with caplog.at_level(logging.WARNING):
            kept, *_ = load_films(TrainConfig(model, where.data, where.output))
        assert {k: v for k, v in kept.dropped.items() if v} == expected.dropped
        assert len(kept) == films - sum(expected.dropped.values())
        for reason, count in expected.dropped.items():  # and logged
            assert f"dropped {count} films: {reason}" in caplog.text
        return

    result = cli(*args, *fast, "--epochs", "1", "--batch-size", "8")

    assert "Traceback" not in result.output
    if isinstance(expected, Fails):
        assert result.exit_code == expected.code, result.output
        line = result.output.strip().splitlines()[-1]
        wanted = "Error: " + expected.message.format(data=where.data, output=where.output)
        assert line.startswith(wanted) if expected.prefix else line == wanted, line
        assert "\n" not in line
        assert not Path(where.output, "_SUCCESS").exists()
        return
    assert result.exit_code == 0, result.output
    run = json.loads(Path(where.output, "config.json").read_text())["run"]
    assert {k: v for k, v in run["films_dropped"].items() if v} == expected.dropped
    assert run["films_used"] == films - sum(expected.dropped.values())
    for reason, count in expected.dropped.items():  # and logged
        assert f"dropped {count} films: {reason}" in result.output


# Each poster kind alone, through the decoder (no training): kept (True) or dropped.
POSTER_KINDS = [
    ("zero bytes", BAD_POSTERS[0], False),
    ("truncated", BAD_POSTERS[1], False),
    ("TIFF named .jpg", BAD_POSTERS[2], False),
    ("HTML named .jpg", BAD_POSTERS[3], False),
    ("grayscale", ODD_JPEGS[0], True),
    ("CMYK", ODD_JPEGS[1], True),
    ("1x1", ODD_JPEGS[2], True),
    ("PNG named .jpg", ODD_JPEGS[3], True),
    ("GIF named .jpg", ODD_JPEGS[4], True),
    ("BMP", lambda jpeg: image("RGB", (150, 300), "BMP"), True),
    ("WebP", lambda jpeg: image("RGB", (150, 300), "WEBP"), True),
    ("grayscale PNG", lambda jpeg: image("L", (150, 300), "PNG"), True),
    ("truncated PNG", lambda jpeg: image("RGB", (150, 300), "PNG")[:60], False),
    ("10000x10000", BOMB, False),
    ("10000x10000 PNG", lambda jpeg: BOMB(jpeg, "PNG"), False),
    ("6000x6000 GIF", lambda jpeg: image("P", (6000, 6000), "GIF"), False),
    ("6000x6000 BMP", lambda jpeg: image("L", (6000, 6000), "BMP"), False),
    ("6000x6000 WebP", lambda jpeg: image("L", (6000, 6000), "WEBP"), False),
    ("24 megapixels", lambda jpeg: image("L", (4000, 6000)), True),
    ("24 megapixels PNG", lambda jpeg: image("L", (4000, 6000), "PNG"), True),
]


@pytest.mark.parametrize("kind, make, kept", POSTER_KINDS, ids=[k[0] for k in POSTER_KINDS])
def test_each_poster_kind_is_kept_as_rgb_or_dropped(kind, make, kept, demo_dir):
    from job.data.poster_decoding import decode_posters

    good_jpeg = next((demo_dir / "Images").glob("*.jpg")).read_bytes()
    posters, good = decode_posters([good_jpeg, make(good_jpeg), good_jpeg], 64)

    assert good.tolist() == [True, kept, True]
    assert posters.shape == (2 + kept, 64, 64, 3) and posters.dtype == "uint8"
