"""Progress of long work as an operator sees it: lines at each quarter and every interval
(also through a stall), JSON fields, and a bar on an interactive terminal."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import subprocess
import sys
import time

from click.testing import CliRunner
from conftest import DEMO_FILMS, ROOT, scaled

from job import progress
from job.cli import main
from job.data import poster_decoding

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def test_prepare_logs_each_quarter_and_every_interval(demo_dir, tmp_path):
    env = {  # every setting from the environment, as in a container
        "GENRE_JOB_LOG_FORMAT": "json",
        "GENRE_JOB_PROGRESS_SECONDS": "0.01",
        "GENRE_JOB_DATA": str(demo_dir),
        "GENRE_JOB_RUN_ID": "prepare-1",
    }
    result = CliRunner().invoke(
        main, ["prepare", "--output", str(tmp_path / "prepared")], env=env, catch_exceptions=False
    )

    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stderr.splitlines()]  # all JSON
    assert all(RFC3339_UTC.match(e["time"]) for e in entries)
    assert all(e["logging.googleapis.com/labels"] == {"run_id": "prepare-1"} for e in entries)
    for task, quarters in (
        # posters decode DECODE_BATCH (64) at a time: 64 is past 25%, 128 past 50% and 75%
        ("fetch and decode posters", [64, 128, 128, 160]),
        ("write films", [40, 80, 120, 160]),  # one film at a time
    ):
        lines = [e for e in entries if e.get("task") == task]
        counts = [e["count"] for e in lines]
        assert counts == sorted(counts) and counts.count(DEMO_FILMS) == 1  # done: one line
        assert all(e["total"] == DEMO_FILMS for e in lines)
        # the first line at or past each quarter is that quarter's, whatever the interval
        # added between them
        at_quarters = [min(c for c in counts if 4 * c >= q * DEMO_FILMS) for q in (1, 2, 3, 4)]
        assert at_quarters == quarters, counts
        started = [e for e in lines if e["count"]]  # (before the first, no rate, no ETA)
        assert all(e["rate"] == 0 and e["eta_s"] is None for e in lines if not e["count"])
        assert all(isinstance(e["rate"], float) and e["rate"] > 0 for e in started)
        assert all(e["eta_s"] >= 0 for e in started) and lines[-1]["eta_s"] == 0.0
    assert poster_decoding.DECODE_BATCH == 64  # (the figures above assume it)


def test_a_stall_logs_every_interval_and_finished_work_stops(caplog, monkeypatch):
    monkeypatch.setattr(progress, "SETTINGS", progress.Settings(interval=0.05, bar=False))
    caplog.set_level(logging.INFO, logger="job.progress")

    def lines(task: str) -> list[dict]:
        return [r.fields for r in caplog.records if r.fields["task"] == task]

    with (
        progress.Progress("fetch", 8, "posters") as stalled,
        progress.Progress("write", 2) as finished,
    ):
        finished.advance(2)  # done, though still open
        stalled.advance(3)  # then nothing moves
        deadline = time.monotonic() + 10
        while len(lines("fetch")) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)

    stall = lines("fetch")
    assert len(stall) >= 4  # the quarter line at 3/8, then one every interval
    assert all(f["count"] == 3 and f["total"] == 8 for f in stall)
    assert [f["eta_s"] for f in stall] == sorted(f["eta_s"] for f in stall)  # growing
    assert re.fullmatch(
        r"fetch: 3/8 posters \(37%\), [0-9.]+ posters/s, ETA [0-9]+ s", caplog.messages[-1]
    )
    assert [(f["count"], f["total"]) for f in lines("write")] == [(2, 2)]  # its last line only


def test_a_terminal_gets_a_progress_bar(demo_dir, tmp_path):
    """stderr a terminal: the bar, then one line at the end; no quarter lines."""
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "job", "prepare", "--data", str(demo_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    with subprocess.Popen(
        [*command, "--output", str(tmp_path / "prepared")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
    ) as job:
        os.close(follower)
        screen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # (EIO: the job closed the terminal)
                break
            if not chunk:
                break
            screen += chunk
        assert job.wait(timeout=scaled(120)) == 0
    os.close(leader)
    text = screen.decode(errors="replace")

    assert re.search(r"write films\s+\[#+-*\]\s+\d+/160", text), text
    assert "write films  [####################################]  160/160" in text, text
    finished = [line for line in text.splitlines() if "job.progress: write films:" in line]
    assert len(finished) == 1 and " 160/160 films (100%)" in finished[0], finished
