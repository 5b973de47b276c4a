"""A full local disk (the job's staging folder under TMPDIR) stops the run with one line
that says which disk and what to do, exit 1, and leaves the output as it was: a real tmpfs
of 2 MB, mounted for the test (root only), and the job as a subprocess (h5py leaves the
file it failed to write open: in a long-lived process, the pytest one, it crashed the
interpreter at its exit)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import ROOT, scaled, train_command

pytestmark = pytest.mark.slow  # the job as a subprocess, two epochs


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (the job's TMPDIR)."""
    if not shutil.which("mount"):
        pytest.skip("no mount command here to make a small disk")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)  # 2 MB if it stays


def test_a_full_staging_disk_is_one_line_with_a_fix(demo_dir, tmp_path, small_disk):
    output = tmp_path / "run"
    result = subprocess.run(
        train_command("cnn", str(demo_dir), str(output), "--epochs", "2"),
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(small_disk)},
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )

    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: local disk full: [Errno 28] "), last
    assert last.endswith(
        f"(the job stages checkpoints and logs under {small_disk}: free space there or set"
        " TMPDIR to a larger disk; on Kubernetes, raise the scratch volume's sizeLimit)"
    ), last
    # Only the run's config was written (no lock left, nothing of a finished run), and the
    # staging was removed (TensorFlow's autograph files stay, as anywhere).
    assert sorted(p.name for p in output.iterdir()) == ["config.json"]
    assert not list(small_disk.glob("genre-job-*"))
