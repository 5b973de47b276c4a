"""Logging for a batch job: plain lines, or one JSON object a line for Cloud Logging."""

from __future__ import annotations

import json
import logging
import os
import re
import sys

# Anything that looks like a credential is masked before a line is written.
SECRET = re.compile(r"(?i)(token|secret|password|signature|key|credential)([=:]\s*)\S+")


def redact(text: str) -> str:
    return SECRET.sub(r"\1\2***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": redact(record.getMessage()),
            "logger": record.name,
            "time": self.formatTime(record),
        }
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for noisy in ("absl", "tensorflow", "fsspec", "gcsfs", "urllib3", "google"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
