"""`--help` answers without TensorFlow, and a CPU-only run prints none of TensorFlow's
CUDA-probe lines, while its real errors (even just before a crash) still reach stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, scaled

from job.cli import main
from job.tfstart import gpu_present


def job_env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": str(ROOT), **changes}


@pytest.mark.parametrize("command", [[], *[[name] for name in sorted(main.commands)]])
def test_help_imports_no_tensorflow(command):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "job", *command, "--help"],
        cwd=ROOT,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    seconds = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: python -m job")
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "job.cli" in imported  # the import log is what it claims to be
    assert not imported & {"tensorflow", "keras", "job.train.run", "job.predict"}
    print(f"{' '.join(command) or 'genre-job'} --help: {seconds:.2f} s")


@pytest.mark.skipif(gpu_present(), reason="a GPU is present: CUDA lines are real there")
def test_a_cpu_only_command_prints_no_cuda_lines(tmp_path):
    output = tmp_path / "demo"
    quiet = subprocess.run(
        [sys.executable, "-m", "job", "demo-data", "--output", str(output), "--films", "10"],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == f"10 films: {output}\n"
    assert quiet.stderr == ""  # TensorFlow loaded (the posters are its JPEGs), nothing said

    # Asked for TensorFlow's info lines, the user gets them, still without the CUDA probe's.
    verbose = subprocess.run(
        [sys.executable, "-m", "job", "demo-data", "--output", str(output), "--films", "10"],
        env=job_env(TF_CPP_MIN_LOG_LEVEL="0"),
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "oneDNN custom operations are on" in verbose.stderr
    assert not [line for line in verbose.stderr.splitlines() if "cuInit" in line]
    assert "Could not find cuda drivers" not in verbose.stderr


BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
NO_DRIVER = (
    "I0000 00:00:1796432451.622329   19446 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used."
)
CUINIT = (
    "E0000 00:00:1796432458.632422   19446 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)"
)
REAL = [
    "E0000 00:00:1796432458.700000   19446 op_kernel.cc:1] a real error",
    "F0000 00:00:1796432458.800000   19446 check.cc:2] Check failed: x == y",
]
PROBE_THEN_CRASH = """
import os, sys
from job.tfstart import filtered_stderr, noise
with filtered_stderr(noise("2", gpu=sys.argv[1] == "gpu")):
    for line in sys.argv[2:]:
        os.write(2, line.encode() + b"\\n")
    os.abort()
"""


@pytest.mark.parametrize("gpu", [False, True])
def test_real_errors_pass_the_filter_even_before_a_crash(gpu):
    """TensorFlow's lines as it writes them (this machine's), then a fatal one and abort()."""
    lines = [BANNER, NO_DRIVER, CUINIT, *REAL]
    crashed = subprocess.run(
        [sys.executable, "-c", PROBE_THEN_CRASH, "gpu" if gpu else "cpu", *lines],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )

    assert crashed.returncode == -6  # SIGABRT: nothing ran after the lines
    # With a GPU present a failed cuInit is a real error; its banner and info line are not.
    assert crashed.stderr.splitlines() == ([CUINIT] if gpu else []) + REAL
