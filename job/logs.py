"""Logging for a batch job: plain lines, or one JSON object a line for Cloud Logging
(https://cloud.google.com/logging/docs/structured-logging).

Every line goes through `redact` (credentials, tokens, signed-URL signatures) and is one
line: a record's traceback is reduced to its last line unless GENRE_JOB_DEBUG is set
(gcsfs logs tracebacks when it gives up retrying).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys

MASK = "***"
LABELS = "logging.googleapis.com/labels"  # Cloud Logging: the entry's labels
# Order matters: whole private keys first, then credentials inside URLs, then name=value.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys (a service-account key file's "private_key"), escaped or not.
    (
        re.compile(
            r"-----BEGIN[A-Z ]*PRIVATE KEY-----.*?(-----END[A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
        MASK,
    ),
    # user:password@ in a URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\1{MASK}@"),
    # Authorization: Bearer/Basic <token>
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{MASK}"),
    # name=value / "name": "value" where the name ends in a secret word: access_token,
    # client_secret, password, X-Goog-Signature, X-Goog-Credential, X-Amz-Security-Token,
    # private_key, api_key, sig (SAS), upload_id (a resumable upload session is a capability)
    (
        re.compile(
            r"(?i)\b((?:[\w.-]*[_.-])?(?:token|secret|password|passwd|pwd|signature|sig|key|apikey"
            r"|credential|credentials|authorization|auth|upload_?id|session))"
            r"(\\?[\"']?\s*[=:]\s*\\?[\"']?)([^\s\"'&,;}\\]+)"
        ),
        rf"\1\2{MASK}",
    ),
    # Bare Google OAuth access tokens, API keys, HMAC access ids.
    (re.compile(r"\bya29\.[0-9A-Za-z_.-]+"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), MASK),
    (re.compile(r"\bGOOG[0-9A-Z]{20,}"), MASK),
]


def redact(text: str) -> str:
    """Mask anything that looks like a credential, token or URL signature."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _message(record: logging.LogRecord) -> str:
    message = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        message = f"{message} ({type(error).__name__}: {error})"
    return redact(" ".join(message.split()))


def _debug() -> bool:
    return bool(os.environ.get("GENRE_JOB_DEBUG"))


def rfc3339(created: float) -> str:
    """A record's time as RFC 3339 UTC with milliseconds: 2026-12-05T01:02:03.456Z."""
    moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """Cloud Logging's structured fields: severity, message, time; the run id
    ($GENRE_JOB_RUN_ID) as a label, so one run's lines are one filter away."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": _message(record),
            "logger": record.name,
            "time": rfc3339(record.created),
        }
        if os.environ.get("GENRE_JOB_RUN_ID"):
            entry[LABELS] = {"run_id": os.environ["GENRE_JOB_RUN_ID"]}
        fields = getattr(record, "fields", {})
        entry.update(json.loads(redact(json.dumps(fields, default=str))))
        if _debug() and record.exc_info:
            entry["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if _debug():
            return redact(super().format(record))
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {_message(record)}"
        return line


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
