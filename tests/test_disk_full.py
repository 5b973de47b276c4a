"""A full local disk (the job's staging folder under TMPDIR) stops the run with one line
that says which disk and what to do, and leaves the output as it was: a real tmpfs of a
few MB, mounted for the test (root only)."""

from __future__ import annotations

import subprocess
import tempfile

import pytest


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs as the process's temporary folder (tempfile's, so the job's staging)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    saved = tempfile.tempdir
    tempfile.tempdir = str(mount_point)
    try:
        yield mount_point
    finally:
        tempfile.tempdir = saved
        subprocess.run(["umount", "-l", str(mount_point)], check=False)  # 2 MB if it stays


# h5py reports the failed write once more when its file object is collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_full_staging_disk_is_one_line_with_a_fix(cli, demo_dir, tmp_path, small_disk):
    output = tmp_path / "run"
    result = cli("train", "--model", "cnn", "--data", demo_dir, "--output", output, "--epochs", "2")

    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: local disk full: [Errno 28] "), last
    assert last.endswith(
        f"(the job stages checkpoints and logs under {small_disk}: free space there or set"
        " TMPDIR to a larger disk; on Kubernetes, raise the scratch volume's sizeLimit)"
    ), last
    # Only the run's config was written (no lock left, nothing of a finished run), and the
    # staging was removed (TensorFlow's autograph files stay, as anywhere).
    assert not (output / "_SUCCESS").exists() and not (output / "predictions.csv").exists()
    assert sorted(p.name for p in output.iterdir()) == ["config.json"]
    assert not list(small_disk.glob("genre-job-*"))
