"""Every film in, one row out: `predict` (and `train`) over the films a user brings.

Posters under any extension's case, in any format TensorFlow decodes (a PNG named .jpg),
found in one listing of a local folder, memory:// or a bucket; one row per requested film
with its status; labels optional; Ids from a list or a file; an --output that is a folder
refused. One fusion model, trained once for the module on those odd films.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import DEMO_FILMS, LSTM_FAST, copy_tree
from PIL import Image

from job import storage
from job.cli import main

CSV = "IMDB_overview_genres.csv"
UNSCORED = "(without --require-all they get a row with their status and no probabilities)"


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def png(jpeg: bytes, mode: str = "RGB") -> bytes:
    """The poster re-encoded as a PNG."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def png_bomb() -> bytes:
    """A valid 100-megapixel PNG (100 KB): refused before decoding (limit 25 megapixels)."""
    buffer = io.BytesIO()
    Image.new("L", (10_000, 10_000), 7).save(buffer, "PNG")
    return buffer.getvalue()


# Film (position in the demo CSV) -> its poster as stored: (file name suffix, content).
KEPT = {
    0: (".JPG", lambda jpeg: jpeg),
    1: (".jpeg", lambda jpeg: jpeg),
    2: (".png", png),
    3: (".jpg", png),  # a PNG named .jpg
    4: (".PNG", lambda jpeg: png(jpeg, "L")),
}
NO_POSTER, UNREADABLE, BOMB, NO_OVERVIEW = 5, 6, 8, 7


@pytest.fixture(scope="module")
def films(demo_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """The demo films with the posters of KEPT renamed or re-encoded, one poster missing,
    one an HTML page, one a PNG bomb, one overview blank; (the data folder, the Ids)."""
    root = tmp_path_factory.mktemp("odd") / "data"
    shutil.copytree(demo_dir, root)
    frame = pd.read_csv(root / CSV, dtype=str, keep_default_na=False)
    ids = frame["Id"].tolist()
    images = root / "Images"
    for index, (suffix, make) in KEPT.items():
        jpeg = (images / f"{ids[index]}.jpg").read_bytes()
        (images / f"{ids[index]}.jpg").unlink()
        (images / f"{ids[index]}{suffix}").write_bytes(make(jpeg))
    (images / f"{ids[NO_POSTER]}.jpg").unlink()
    (images / f"{ids[UNREADABLE]}.jpg").write_bytes(b"<html>not found</html>")
    (images / f"{ids[BOMB]}.jpg").unlink()
    (images / f"{ids[BOMB]}.png").write_bytes(png_bomb())
    frame.loc[NO_OVERVIEW, "Overview"] = ""
    frame.to_csv(root / CSV, index=False)
    return root, ids


@pytest.fixture(scope="module")
def trained(films) -> tuple[Path, str]:
    """(the run folder, train's output) of one fusion model trained on the odd films."""
    data, _ = films
    run = data.parent / "run"
    result = invoke(
        "train", "--model", "fusion", "--data", data, "--output", run, *LSTM_FAST,
        "--epochs", "1", "--batch-size", "16",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run, result.output


def predict(run: Path, data: str, output: str, *extra: object):
    return invoke("predict", "--model-dir", run, "--data", data, "--output", output, *extra)


def read_predictions(url: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(storage.read_bytes(url)), dtype={"Id": str, "status": str})


@pytest.mark.slow  # uses the trained run
def test_train_reads_posters_whatever_their_name_and_format(films, trained):
    """Posters named .JPG, .jpeg, .png, .PNG, and a PNG named .jpg, train like JPEGs; the
    missing, the unreadable and the bomb are counted, logged and dropped."""
    data, ids = films
    run, output = trained

    dropped = json.loads((run / "config.json").read_text())["run"]["films_dropped"]

    assert {k: v for k, v in dropped.items() if v} == {
        "no poster": 1,
        "unreadable poster": 2,
        "no overview": 1,
    }
    assert f"dropped 1 films: no poster (e.g. {ids[NO_POSTER]})" in output
    assert f"dropped 2 films: unreadable poster (e.g. {ids[UNREADABLE]}, {ids[BOMB]})" in output


def test_png_and_renamed_posters_decode_as_their_jpegs(films, demo_dir):
    """What the model sees of a renamed JPEG is its JPEG's; of a PNG, the same picture
    (decoded full-size, area-averaged: within a few levels of the JPEG's scaled decoding)."""
    from job.data.catalogue import read_catalogue
    from job.data.poster_decoding import read_posters

    data, ids = films
    wanted = [ids[i] for i in KEPT]
    catalogue = read_catalogue(str(demo_dir / CSV))
    catalogue = catalogue.subset(np.isin(catalogue.ids, wanted))
    _, originals = read_posters(catalogue, str(demo_dir / "Images"), 64)
    kept, odd = read_posters(catalogue, str(data / "Images"), 64)

    assert kept.ids == wanted
    assert np.array_equal(odd[:2], originals[:2])  # .JPG, .jpeg: the same bytes
    difference = np.abs(odd[2:].astype(int) - originals[2:].astype(int))
    assert difference[:2].mean() < 3, difference.mean(axis=(1, 2, 3))  # RGB PNGs
    gray = originals[4] @ [0.299, 0.587, 0.114]  # (the .PNG is grayscale: PIL's luma)
    assert np.all(odd[4] == odd[4][:, :, :1]) and np.abs(odd[4, :, :, 0] - gray).mean() < 3


def where(kind: str, films, request) -> tuple[str, str]:
    """(data URL, output URL) of the odd films copied to `kind` storage."""
    data, _ = films
    if kind == "local":
        return str(data), str(data.parent / f"predictions-{uuid.uuid4().hex[:8]}.csv")
    root = f"memory://h17a-{uuid.uuid4().hex[:8]}"
    if kind == "gcs":
        root = request.getfixturevalue("bucket")
    copy_tree(data, f"{root}/data")
    return f"{root}/data", f"{root}/out/predictions.csv"


@pytest.mark.parametrize("kind", ["local", "memory", "gcs"])
@pytest.mark.slow  # uses the trained run
def test_predict_writes_one_row_per_film_with_its_status(kind, films, trained, request):
    data, ids = films
    data_url, output = where(kind, films, request)

    result = predict(trained[0], data_url, output)

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        f"{DEMO_FILMS} predictions (156 ok, 1 no poster, 2 unreadable poster, 1 no overview):"
        f" {output}"
    )
    frame = read_predictions(output)
    assert frame["Id"].tolist() == ids
    assert frame.columns[:4].tolist() == ["Id", "status", "predicted_genres", "true_genres"]
    expected = {ids[NO_POSTER]: "no poster", ids[UNREADABLE]: "unreadable poster"}
    expected |= {ids[BOMB]: "unreadable poster", ids[NO_OVERVIEW]: "no overview"}
    assert dict(zip(frame["Id"], frame["status"], strict=True)) == {
        i: expected.get(i, "ok") for i in ids
    }
    probs = frame[[c for c in frame.columns if c.startswith("prob_")]]
    unscored = frame["status"] != "ok"
    assert probs[unscored].isna().all().all() and frame["predicted_genres"][unscored].isna().all()
    assert probs[~unscored].notna().all().all()
    assert ((probs[~unscored] >= 0) & (probs[~unscored] <= 1)).all().all()


@pytest.mark.slow  # uses the trained run
def test_require_all_refuses_unscored_films_and_writes_nothing(films, trained, tmp_path):
    data, ids = films
    output = tmp_path / "p.csv"
    output.write_text("an earlier run's predictions\n")

    result = predict(trained[0], data, output, "--require-all")

    assert result.exit_code == 3, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: 4 of {DEMO_FILMS} films cannot be scored (no poster: {ids[NO_POSTER]};"
        f" unreadable poster: {ids[UNREADABLE]}, {ids[BOMB]}; no overview: {ids[NO_OVERVIEW]})"
        f" {UNSCORED}"
    )
    assert output.read_text() == "an earlier run's predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]

    wanted = [ids[i] for i in KEPT]
    result = predict(trained[0], data, output, "--require-all", "--ids", ",".join(wanted))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"5 predictions (5 ok): {output}"


@pytest.mark.slow  # uses the trained run
def test_ids_with_spaces_and_from_a_file(films, trained, tmp_path, bucket):
    data, ids = films
    wanted = [ids[12], ids[10], ids[NO_POSTER], ids[11]]
    listed = tmp_path / "ids.txt"
    listed.write_text(f"\n {ids[12]} \n\n{ids[10]}\r\n{ids[NO_POSTER]}\n{ids[11]}\n{ids[10]}\n")
    storage.write_bytes(f"{bucket}/ids.txt", listed.read_bytes())
    in_order = [i for i in ids if i in wanted]  # the catalogue's order, once each
    runs = {
        "--ids": ("--ids", f" {ids[12]} , {ids[10]},{ids[NO_POSTER]} ,  {ids[11]}"),
        "--ids-file": ("--ids-file", listed),
        "--ids-file gs://": ("--ids-file", f"{bucket}/ids.txt"),
    }
    for name, flag in runs.items():
        output = tmp_path / f"{name}.csv"
        result = predict(trained[0], data, output, *flag)
        assert result.exit_code == 0, (name, result.output)
        assert result.output.splitlines()[-1] == f"4 predictions (3 ok, 1 no poster): {output}"
        frame = read_predictions(str(output))
        assert frame["Id"].tolist() == in_order, name
        assert frame["status"].tolist() == ["ok" if i != ids[NO_POSTER] else "no poster"
                                            for i in in_order]  # fmt: skip


@pytest.mark.slow  # uses the trained run
def test_unknown_or_no_ids_are_refused(films, trained, tmp_path):
    data, ids = films
    output = tmp_path / "p.csv"
    unknown = [f"nosuch{n}" for n in range(7)]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    cases = [
        (
            ("--ids", ",".join([ids[0], *unknown])),
            3,
            f"Error: 7 of 8 requested Ids are not films of {data}/{CSV}:"
            " nosuch0, nosuch1, nosuch2, nosuch3, nosuch4 and 2 more",
        ),
        (
            ("--ids", "nosuch"),
            3,
            f"Error: 1 of 1 requested Ids are not films of {data}/{CSV}: nosuch",
        ),
        (("--ids", " , "), 2, "Error: Invalid value for --ids: names no film Id"),
        (
            ("--ids-file", tmp_path / "missing.txt"),
            3,
            f"Error: {tmp_path}/missing.txt: no such file (check --ids-file)",
        ),
        (("--ids-file", empty), 3, f"Error: {empty}: no film Ids in the file (one a line)"),
        (("--ids", ids[0], "--ids-file", empty), 2, "Error: give --ids or --ids-file, not both"),
    ]
    for flags, code, line in cases:
        result = predict(trained[0], data, output, *flags)
        assert (result.exit_code, result.output.splitlines()[-1]) == (code, line), flags
    assert list(tmp_path.iterdir()) == [empty]


def write_catalogue(data: Path, name: str, frame: pd.DataFrame) -> str:
    frame.to_csv(data / name, index=False)
    return name


@pytest.mark.slow  # uses the trained run
def test_labels_are_optional_and_odd_genre_columns_are_named(films, trained, tmp_path):
    data, ids = films
    genres = json.loads((trained[0] / "config.json").read_text())["run"]["genres"]
    frame = pd.read_csv(data / CSV, dtype=str, keep_default_na=False).iloc[10:14]
    frame[genres] = ""  # a template: the training header, genre cells blank
    frame.iloc[1, frame.columns.get_loc(genres[2])] = "1"
    template = write_catalogue(data, "template.csv", frame)

    result = predict(trained[0], data, tmp_path / "t.csv", "--csv", template)

    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.output
    labelled = read_predictions(str(tmp_path / "t.csv"))
    assert labelled["true_genres"].fillna("").tolist() == ["", genres[2], "", ""]

    other = frame.drop(columns=genres[2:]).assign(Western="0", Musical="")
    mismatched = write_catalogue(data, "other-genres.csv", other)
    result = predict(trained[0], data, tmp_path / "o.csv", "--csv", mismatched)

    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if " WARNING " in line]
    assert [line.split(" WARNING ", 1)[1] for line in warnings] == [
        f"job.data.catalogue: {data}/{mismatched}: column(s) not among the model's genres,"
        f" ignored: Western, Musical; no true_genres: 4 of the model's 6 genres missing"
        f" ({', '.join(genres[2:])})"
    ]
    assert "true_genres" not in read_predictions(str(tmp_path / "o.csv")).columns

    frame.iloc[2, frame.columns.get_loc(genres[0])] = "yes"
    bad = write_catalogue(data, "bad-genres.csv", frame)
    result = predict(trained[0], data, tmp_path / "b.csv", "--csv", bad)
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == (
        f"Error: {data}/{bad}: genre column {genres[0]!r} holds 'yes' on line 4;"
        " genre values must be 0, 1 or empty"
    )


FOLDER = (
    "Error: {0}: is a folder; --output names the predictions CSV file"
    " (e.g. --output {0}/predictions.csv; a folder only with --shard-count)"
)


@pytest.mark.slow  # uses the trained run
def test_output_naming_a_folder_is_refused_leaving_nothing(films, trained, tmp_path, bucket):
    data, _ = films
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    storage.write_text(f"{bucket}/out/notes.txt", "mine")

    for output in (folder, f"{bucket}/out", f"{tmp_path}/new/"):
        result = predict(trained[0], data, output, "--ids", "x")
        assert result.exit_code == 4, result.output
        assert result.output.splitlines()[-1] == FOLDER.format(str(output).rstrip("/"))

    assert sorted(p.name for p in tmp_path.rglob("*")) == ["notes.txt", "out"]
    assert storage.list_files(bucket) == ["out/notes.txt"]


def test_a_failed_local_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()

    with pytest.raises(IsADirectoryError):
        storage.write_bytes(str(tmp_path / "taken"), b"data")

    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


@pytest.mark.slow  # uses the trained run
def test_sharded_predictions_merge_with_their_status(films, trained, tmp_path):
    data, _ = films
    single = tmp_path / "single.csv"
    assert predict(trained[0], data, single).exit_code == 0
    for index in range(2):
        result = predict(trained[0], data, tmp_path / "parts", "--shard-index", index,
                         "--shard-count", 2)  # fmt: skip
        assert result.exit_code == 0, result.output

    parts, merged = tmp_path / "parts", tmp_path / "m.csv"
    result = invoke("merge-predictions", "--input", parts, "--output", merged)

    assert result.exit_code == 0, result.output
    merged, alone = read_predictions(str(merged)), read_predictions(str(single))
    assert merged.columns.tolist() == alone.columns.tolist()
    assert merged[["Id", "status"]].equals(alone[["Id", "status"]])
    assert (merged["status"] != "ok").sum() == 4
    probs = [c for c in alone.columns if c.startswith("prob_")]  # (batches differ: 1e-6)
    np.testing.assert_allclose(merged[probs], alone[probs], atol=1e-5)  # NaN where NaN
