"""No credential, token or signed URL in logs, config.json or error messages: the CLI runs
as a subprocess with fake secrets in its environment and in its URLs, and every byte it
prints or writes is searched for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, scaled

from job.logs import redact

SECRETS = {
    "GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.FAKEaccessTOKEN0123456789",
    "GCS_OAUTH_TOKEN": "fake-oauth-token-5f1c2e",
    "AWS_SECRET_ACCESS_KEY": "fakeAwsSecretKey0123456789",
    "GENRE_JOB_TEST_PASSWORD": "hunter2-fake-password",
}
SIGNATURE = "0f1e2d3c4b5a69788796a5b4c3d2e1f0feedfacecafebeef"
CREDENTIAL = "svc%40project.iam.gserviceaccount.com%2F20260101%2Fauto"
SIGNED_QUERY = (
    f"?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential={CREDENTIAL}"
    f"&X-Goog-Signature={SIGNATURE}"
)
PEM_END = '\\n-----END PRIVATE KEY-----"'
NEEDLES = [*SECRETS.values(), SIGNATURE, CREDENTIAL, "hunter3-in-url"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **SECRETS, "PYTHONUNBUFFERED": "1"}
    env.pop("GENRE_JOB_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "job", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(600),
    )


def leaks(text: str) -> list[str]:
    return [needle for needle in NEEDLES if needle in text]


@pytest.mark.slow
def test_successful_run_writes_and_logs_no_secret(demo_dir, tmp_path):
    output = tmp_path / "run"
    result = run_cli(
        "--log-format", "json", "train", "--model", "cnn", "--data", str(demo_dir),
        "--output", str(output), "--epochs", "1", "--batch-size", "8",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert not leaks(result.stdout + result.stderr)
    for file in output.rglob("*"):
        if file.is_file():
            assert not leaks(file.read_bytes().decode("latin-1")), file


@pytest.mark.parametrize(
    "data, code",
    [
        # 3: bad input (no such bucket); 1: storage unreachable (nothing listens on port 9)
        pytest.param("gs://no-such-bucket-genre-job/imdb" + SIGNED_QUERY, 3, id="signed URL"),
        pytest.param("http://reader:hunter3-in-url@127.0.0.1:9/imdb", 1, id="password in URL"),
        pytest.param(
            "http://127.0.0.1:9/imdb?access_token=" + SECRETS["GCS_OAUTH_TOKEN"], 1, id="token"
        ),
    ],
)
@pytest.mark.slow  # the job as a subprocess, through its storage retries
def test_errors_name_the_url_without_its_secrets(data, code, tmp_path, gcs_server, monkeypatch):
    monkeypatch.setenv("GENRE_JOB_STORAGE_RETRY_S", "3")  # one retry: its log line too
    result = run_cli("train", "--model", "cnn", "--data", data, "--output", str(tmp_path / "r"))

    assert result.returncode == code, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not leaks(result.stdout + result.stderr), result.stderr
    assert "***" in last  # the URL is named, its secret masked


def test_config_json_does_not_keep_a_signature_from_the_output_url(tmp_path):
    from job.config import TrainConfig

    config = TrainConfig(
        model="cnn",
        data=f"gs://films/imdb{SIGNED_QUERY}",
        output=str(tmp_path / f"run{SIGNED_QUERY}"),
    )

    saved = config.to_json()

    assert not leaks(saved)
    assert json.loads(saved)["output"].startswith(str(tmp_path / "run"))


@pytest.mark.parametrize(
    "text",
    [
        "https://storage.googleapis.com/b/o" + SIGNED_QUERY,
        f'{{"access_token": "{SECRETS["GOOGLE_OAUTH_ACCESS_TOKEN"]}", "expires_in": 3599}}',
        f"Authorization: Bearer {SECRETS['GCS_OAUTH_TOKEN']}",
        "https://reader:hunter3-in-url@example.com/x",
        f"password={SECRETS['GENRE_JOB_TEST_PASSWORD']} retry",
        "upload_id=ADPycdt-hunter3-in-url&name=x",
        f"token {SECRETS['GOOGLE_OAUTH_ACCESS_TOKEN']} expired",
        '"private_key": "-----BEGIN PRIVATE KEY-----\\n' + SIGNATURE + PEM_END,
    ],
)
def test_redact_masks(text):
    assert not leaks(redact(text)), redact(text)


def test_redact_keeps_ordinary_lines():
    line = 'config {"max_tokens": 10000, "seed": 42, "data": "gs://films/imdb"}'
    assert redact(line) == line
