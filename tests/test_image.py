"""The container image, built from the Dockerfile and run as a user runs it (podman, root).

The Dockerfile's base (tensorflow/tensorflow:<tf>-gpu) needs a registry; a stand-in made by
scripts/standin-base (Debian bookworm's Python 3.11 + the pinned TensorFlow, cached in
podman's storage between runs) takes its place, through scripts/build-image --base.
The image then runs as its own user with a read-only root, only /scratch writable and no
network: demo-data, train, predict, report; then against the fake-gcs-server on the host;
then plainly, with nothing mounted, as on a workstation.

Needs podman and runc (and debootstrap while the stand-in is not cached): .ci/run installs
them with apt-get when it runs as root. Docs: docs/operations.md, "Container".
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import DEMO_FILMS, ROOT, copy_tree, scaled, train_args
from runcheck import assert_export_reproduces_run, check_run, read_csv
from test_report import REPORT_FILES, check_png

pytestmark = pytest.mark.slow

NAME = "localhost/genre-job-test"
USER = "10001:10001"
ONE_EPOCH = ["--epochs", "1", "--batch-size", "32"]
# Inside the container: what the job may write, as the job's user.
PROBE = """
import json, os, sys
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w") as f:
            f.write("x")
        os.remove(os.path.join(path, ".probe"))
        return True
    except OSError:
        return False
home, tmp = os.environ["HOME"], os.environ["TMPDIR"]
dots = sorted(d for d in os.listdir(home) if d.startswith("."))
nested = [os.path.join(home, d, n) for d in dots for n in os.listdir(os.path.join(home, d))
          if os.path.isdir(os.path.join(home, d, n))]
paths = [home, tmp, "/", "/tmp", "/var/tmp", "/opt/genre-job"]
paths += [os.path.join(home, d) for d in dots] + nested
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "home": home, "tmpdir": tmp, "dots": dots,
    "writable": {p: writable(p) for p in paths},
    "owners": {p: os.stat(p).st_uid for p in paths},
    "interfaces": sorted(os.listdir("/sys/class/net")),
}))
"""


def skip_reason() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/run installs it with apt-get when run as root)"
    if os.geteuid() != 0:
        return "needs root: the stand-in base is made with debootstrap, the image run by runc"
    return None


def podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def run(
    image: str,
    *args: str,
    scratch: Path | None = None,
    network: str = "none",
    read_only: bool = True,
    entrypoint: str | None = None,
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """`podman run` the image as its own user; only `scratch` (mounted on /scratch) writable."""
    # runc: crun rejects a cgroup v1/v2 hybrid. podman's default nofile (1048576) is above
    # the hard limit a container here may have, so the limits are the current hard ones.
    command = ["--runtime", "runc", "run", "--rm", f"--network={network}"]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:
        command.append(f"--ulimit=nofile={hard}:{hard}")
    command.append("--ulimit=nproc=4096:4096")
    if read_only:
        command += ["--read-only", "--read-only-tmpfs=false"]
    if scratch is not None:
        command.append(f"--volume={scratch}:/scratch:U")  # U: owned by the container's user
    for key, value in (env or {}).items():
        command.append(f"--env={key}={value}")
    if entrypoint:
        command.append(f"--entrypoint={entrypoint}")
    command += extra or []
    return podman(*command, image, *args, timeout=scaled(900))


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


def image_id(ref: str) -> str | None:
    proc = podman("image", "inspect", "--format", "{{.Id}}", ref)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def image() -> dict:
    """Builds the image on the stand-in base; yields its tags and `podman image inspect`."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    standin = subprocess.run(
        [str(ROOT / "scripts" / "standin-base")],
        capture_output=True,
        text=True,
        timeout=scaled(1800),
    )
    assert standin.returncode == 0, standin.stderr
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    previous = image_id(f"{NAME}:{version}")
    build = subprocess.run(
        [str(ROOT / "scripts" / "build-image"), "--engine", "podman"]
        + ["--base", standin.stdout.strip(), "--image", NAME],
        capture_output=True,
        text=True,
        timeout=scaled(1800),
    )
    assert build.returncode == 0, build.stderr[-5000:]
    tags = build.stdout.split()
    (info,) = json.loads(ok(podman("image", "inspect", tags[0])))
    # The image this build replaced under the same tag would only take space.
    if previous and previous != info["Id"]:
        podman("rmi", previous)
    yield {"tags": tags, "version": version, "info": info}
    podman("untag", tags[0], tags[1])


def test_tags_labels_and_user(image):
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    version, revision_tag = image["tags"]
    assert version == f"{NAME}:{image['version']}"
    assert re.fullmatch(rf"{NAME}:{commit[:12]}(-dirty)?", revision_tag)
    assert image_id(revision_tag) == image["info"]["Id"]
    config = image["info"]["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == image["version"]
    assert labels["org.opencontainers.image.revision"] == commit + revision_tag[len(NAME) + 13 :]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels["org.opencontainers.image.created"]
    )
    origin = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    web = re.sub(r"\.git$", "", re.sub(r"^git@([^:]+):", r"https://\1/", origin))
    if web.startswith(("https://", "http://")):
        assert labels["org.opencontainers.image.source"] == web
    else:  # no origin, or a local folder: not an address to publish
        assert "org.opencontainers.image.source" not in labels
    assert config["User"] == USER
    assert config["Entrypoint"] == ["genre-job"]


def test_offline_with_a_read_only_root(image, tmp_path, demo_dir):
    """demo-data -> train -> predict -> report, no network, only /scratch writable."""
    tag, scratch = image["tags"][0], tmp_path / "scratch"
    scratch.mkdir()

    probe = json.loads(ok(run(tag, "-c", PROBE, scratch=scratch, entrypoint="python3")))
    assert f"{probe['uid']}:{probe['gid']}" == USER
    assert probe["interfaces"] == ["lo"]
    assert {p for p, w in probe["writable"].items() if w} == {"/scratch"}

    proc = run(tag, "--help", scratch=scratch)
    help_text = ok(proc)
    assert proc.stderr == ""  # --help loads no TensorFlow: nothing on stderr
    assert help_text.startswith("Usage: genre-job [OPTIONS] COMMAND [ARGS]...")
    for command in ("train", "predict", "report", "demo-data", "merge-predictions"):
        assert re.search(rf"^  {command}\s", help_text, re.M), command

    data = "/scratch/data"
    out = ok(
        run(
            tag,
            "demo-data",
            "--output",
            data,
            "--films",
            f"{DEMO_FILMS}",
            "--seed",
            "1",
            scratch=scratch,
        )
    )
    assert out == f"{DEMO_FILMS} films: {data}\n"
    # The same films, byte for byte, as the package installed on the host makes.
    made = sorted(p.relative_to(scratch / "data") for p in (scratch / "data").rglob("*.*"))
    assert made == sorted(p.relative_to(demo_dir) for p in demo_dir.rglob("*.*"))
    for name in made:
        assert (scratch / "data" / name).read_bytes() == (demo_dir / name).read_bytes(), name

    model = "/scratch/runs/cnn"
    out = ok(run(tag, *train_args("cnn", data, model, *ONE_EPOCH), scratch=scratch))
    config = check_run(str(scratch / "runs" / "cnn"), "cnn", epochs=1, data=str(scratch / "data"))
    metrics = json.loads((scratch / "runs" / "cnn" / "metrics.json").read_text())
    evaluation = config["run"]["split_sizes"]["evaluation"]
    assert out == (
        f"micro-F1 {metrics['tuned_thresholds']['micro_f1']:.3f} on {evaluation} evaluation films\n"
        f"predictions: {model}/predictions.csv\n"
    )
    assert metrics["evaluation_films"] == evaluation

    out = ok(
        run(
            tag,
            "predict",
            "--model-dir",
            model,
            "--data",
            data,
            "--output",
            "/scratch/predictions.csv",
            scratch=scratch,
        )
    )
    films = config["run"]["films_used"]
    assert out == f"{films} predictions ({films} ok): /scratch/predictions.csv\n"
    assert_export_reproduces_run(
        str(scratch / "runs" / "cnn"), str(scratch / "predictions.csv"), films
    )

    out = ok(run(tag, "report", "--run", model, "--count", "5", scratch=scratch))
    assert out.splitlines() == [f"{model}/{name}" for name in REPORT_FILES]
    check_png(str(scratch / "runs" / "cnn" / "examples.png"), 1000, 300)
    check_png(str(scratch / "runs" / "cnn" / "training.png"), 800, 300)
    check_png(str(scratch / "runs" / "cnn" / "per_genre.png"), 500, 300)
    page = (scratch / "runs" / "cnn" / "examples.html").read_text()
    shown = read_csv(str(scratch / "runs" / "cnn" / "predictions.csv"))["Id"]
    assert sum(f"<h2>{i}</h2>" in page for i in shown) == 5


def test_trains_from_and_writes_to_a_bucket(image, tmp_path, demo_dir, bucket, gcs_server):
    """Network on (the host's: the server listens on its loopback), the bucket through gcsfs."""
    tag, scratch = image["tags"][0], tmp_path / "scratch"
    scratch.mkdir()
    copy_tree(demo_dir, f"{bucket}/data")
    output = f"{bucket}/runs/cnn"

    out = ok(
        run(
            tag,
            *train_args("cnn", f"{bucket}/data", output, *ONE_EPOCH),
            scratch=scratch,
            network="host",
            env={"STORAGE_EMULATOR_HOST": gcs_server},
        )
    )

    assert out.endswith(f"predictions: {output}/predictions.csv\n")
    check_run(output, "cnn", epochs=1)
    # Staging and checkpoints went to the bucket: /scratch keeps only the libraries' dot-folders.
    left = sorted(p.name for p in scratch.iterdir())
    assert left and all(name.startswith(".") for name in left), left


def test_plain_run_on_a_workstation(image):
    """No volume over /scratch, a writable root, one container: demo-data, train, report
    (TensorFlow, Keras and matplotlib make their dot-folders in HOME), then the probe.
    HOME and TMPDIR are the image's /scratch; all of it the job's user's, no warning."""
    tag = image["tags"][0]
    steps = [
        "genre-job demo-data --output /scratch/d --films 60",
        "genre-job " + " ".join(train_args("cnn", "/scratch/d", "/scratch/run", *ONE_EPOCH)),
        "genre-job report --run /scratch/run --count 2",
        'python3 -c "$PROBE"',
    ]

    proc = run(
        tag, "-c", " && ".join(steps), read_only=False, entrypoint="bash", env={"PROBE": PROBE}
    )

    *outputs, last = ok(proc).splitlines()
    assert outputs[0] == "60 films: /scratch/d" and outputs[-1] == "/scratch/run/per_genre.png"
    probe = json.loads(last)
    assert probe["home"] == probe["tmpdir"] == "/scratch"
    assert {".cache", ".config", ".keras"} <= set(probe["dots"])
    mine = [p for p in probe["writable"] if p.startswith("/scratch")]
    assert {p: probe["writable"][p] for p in mine} == {p: True for p in mine}
    assert {p: probe["owners"][p] for p in mine} == {p: 10001 for p in mine}
    warnings = re.compile(r"warn|not a writable|permission denied|read-only", re.I)
    assert [line for line in proc.stderr.splitlines() if warnings.search(line)] == []


def test_as_the_callers_user_with_adc_mounted(image, tmp_path):
    """The workstation command of docs/operations.md: your UID, your folder as /scratch,
    gcloud's ADC file (0600, yours) mounted read-only and found by google-auth."""
    tag, scratch, uid = image["tags"][0], tmp_path / "scratch", 4321
    scratch.mkdir()
    adc = tmp_path / "application_default_credentials.json"
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "764086051850-example.apps.googleusercontent.com",
                "client_secret": "not-a-secret",
                "refresh_token": "1//not-a-token",
            }
        )
    )
    adc.chmod(0o600)
    for path in (scratch, adc):
        os.chown(path, uid, uid)
    check = (
        "import google.auth, json, os, tempfile; credentials, _ = google.auth.default();"
        " tempfile.mkstemp(); os.makedirs(os.path.expanduser('~/.keras/x'));"
        " print(json.dumps([type(credentials).__module__, credentials.client_id, os.getuid()]))"
    )

    mounts = [
        f"--user={uid}:{uid}",
        f"--volume={scratch}:/scratch",
        f"--volume={adc}:/secrets/adc.json:ro",
        "--env=GOOGLE_APPLICATION_CREDENTIALS=/secrets/adc.json",
    ]

    proc = run(tag, "-c", check, entrypoint="python3", extra=mounts)

    module, client_id, seen_uid = json.loads(ok(proc))
    assert module == "google.oauth2.credentials" and client_id.startswith("764086051850-")
    assert seen_uid == uid
    proc = run(tag, "--help", extra=mounts)
    assert ok(proc).startswith("Usage: genre-job")
    assert proc.stderr == ""
