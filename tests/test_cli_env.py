"""Settings from the environment named in --help, examples in every command's help, and
the JSON log line's exact shape for Cloud Logging."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from job.cli import main
from job.logs import JsonFormatter

ENV_VARS = {
    None: ["GENRE_JOB_LOG_FORMAT", "GENRE_JOB_PROGRESS_SECONDS"],
    "train": [
        "[env var: GENRE_JOB_DATA; required]",
        "[env var: AIP_MODEL_DIR, GENRE_JOB_OUTPUT; required]",
        "[env var: AIP_CHECKPOINT_DIR]",
        "[env var: AIP_TENSORBOARD_LOG_DIR]",
    ],
    "predict": ["[env var: GENRE_JOB_DATA; required]", "[env var: JOB_COMPLETION_INDEX;"],
    "prepare": ["[env var: GENRE_JOB_DATA; required]"],
}


def help_text(command: str | None) -> str:
    result = CliRunner().invoke(main, [command, "--help"] if command else ["--help"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", list(ENV_VARS))
def test_help_names_the_environment_variables(command):
    flat = " ".join(help_text(command).split())  # (click wraps at the terminal's width)

    for name in ENV_VARS[command]:
        assert name in flat
    assert "[env " not in flat.replace("[env var: ", "")  # no hand-written defaults left


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_shows_examples_line_by_line(command):
    lines = help_text(command).splitlines()

    heading = next(i for i, line in enumerate(lines) if line in ("  Example:", "  Examples:"))
    assert lines[heading + 1].startswith(f"    genre-job {command} ")  # as written, not rewrapped


def test_json_log_line_for_cloud_logging(monkeypatch):
    monkeypatch.setenv("GENRE_JOB_RUN_ID", "cnn-20261205-010203-9f3a")
    record = logging.makeLogRecord(
        {"name": "job.training", "levelname": "INFO", "levelno": logging.INFO,
         "msg": "epoch %d/%d", "args": (1, 40), "created": 1796432523.456,
         "fields": {"epoch": 1}}
    )  # fmt: skip

    line = JsonFormatter().format(record)

    assert json.loads(line) == {
        "severity": "INFO",
        "message": "epoch 1/40",
        "logger": "job.training",
        "time": "2026-12-05T01:02:03.456Z",
        "logging.googleapis.com/labels": {"run_id": "cnn-20261205-010203-9f3a"},
        "epoch": 1,
    }
    monkeypatch.delenv("GENRE_JOB_RUN_ID")
    assert "logging.googleapis.com/labels" not in json.loads(JsonFormatter().format(record))
