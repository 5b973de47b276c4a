"""Property: whatever rows the CSV holds, read_catalogue returns a consistent Catalogue
(safe Ids, unique, labels 0/1, shapes agree) or raises InputError; nothing else."""

from __future__ import annotations

import csv
import io
import uuid

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from job import storage
from job.data.catalogue import SAFE_ID, read_catalogue
from job.errors import InputError

GENRES = ["Action", "Drama"]
cells = st.one_of(
    st.sampled_from(["0", "1", " 1 ", "", "2", "yes", "0.0", "-1", "1\n"]), st.text(max_size=5)
)
ids = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["tt1", "tt1", "../x", "/abs", "gs://b/x", "a\x00b", "..", ".", " tt2 "]),
    st.from_regex(r"tt[0-9]{1,4}", fullmatch=True),
)
rows = st.lists(st.tuples(ids, st.text(max_size=40), cells, cells), min_size=0, max_size=12)


def to_csv(header: list[str], body: list[tuple]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for film_id, overview, action, drama in body:
        writer.writerow([film_id, overview, action, drama])
    return buffer.getvalue().encode("utf-8", errors="surrogatepass")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=rows,
    header=st.sampled_from(
        [["Id", "Overview", *GENRES], ["Id", "Overview", "Action", "Action"], ["Id", "Overview"]]
    ),
    raw=st.one_of(st.none(), st.binary(max_size=60)),
)
def test_read_catalogue_is_consistent_or_input_error(body, header, raw):
    url = f"memory://property-{uuid.uuid4().hex}/films.csv"
    data = raw if raw is not None else to_csv(header, body)
    storage.write_bytes(url, data)
    try:
        films = read_catalogue(url)
    except InputError as error:
        assert str(error) and "\n" not in str(error)
        return
    finally:
        storage.remove(url)
    assert len(films.ids) == len(films.overviews) == films.labels.shape[0]
    assert films.labels.shape[1] == len(films.genres) >= 1
    assert set(np.unique(films.labels)) <= {0.0, 1.0}
    assert films.labels.dtype == np.float32
    assert all(SAFE_ID.match(i) and "/" not in i and ".." != i for i in films.ids)
    assert len(set(films.ids)) == len(films.ids)
    assert all(isinstance(o, str) for o in films.overviews)
