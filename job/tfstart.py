"""Loading TensorFlow without its start-up noise, and without hiding its errors.

TensorFlow writes some lines to stderr before its logging reads TF_CPP_MIN_LOG_LEVEL (the
job sets 2: no info, no warnings), so that setting cannot hide them: absl's banner ("All
log messages before absl::InitializeLog() ...") and the info lines after it. On a machine
without a GPU its device probe adds "Could not find cuda drivers" and an ERROR line,
"failed call to cuInit", that is no error there. `load()` imports TensorFlow and lets it
probe devices with stderr passed through `grep -v` of exactly those lines: what is below
the level TF_CPP_MIN_LOG_LEVEL asks for, and the CUDA-probe lines only when no GPU device
is present. grep runs as a process of its own, so a crash while TensorFlow loads loses
none of its last lines; everything else, and everything after the probe, passes as is.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys

BANNER = r"^WARNING: All log messages before absl::InitializeLog\(\) is called"
CUDA_PROBE = [r"cudart_stub\.cc:[0-9]+\] Could not find cuda drivers", r"failed call to cuInit"]


def gpu_present() -> bool:
    """An NVIDIA device node or driver entry: then CUDA errors are real and all shown."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/proc/driver/nvidia/gpus/*"))


def noise(level: str | None = None, gpu: bool | None = None) -> str | None:
    """A grep -E pattern of the lines to drop, or None when there are none."""
    try:
        level_n = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") if level is None else level)
    except ValueError:
        level_n = 0
    patterns = []
    if level_n >= 1:  # absl's format: severity letter, MMDD, time, thread, file:line]
        hidden = "IW"[: min(level_n, 2)]
        patterns += [BANNER, rf"^[{hidden}][0-9]{{4}} [0-9:.]+ +[0-9]+ [^ ]+:[0-9]+\] "]
    if not (gpu_present() if gpu is None else gpu):
        patterns += CUDA_PROBE
    return "|".join(f"({p})" for p in patterns) or None


@contextlib.contextmanager
def filtered_stderr(pattern: str | None):
    """File descriptor 2 goes through `grep -v -E pattern` inside the block."""
    grep = shutil.which("grep")
    if not pattern or grep is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    child = subprocess.Popen(
        [grep, "-a", "--line-buffered", "-v", "-E", pattern],
        stdin=subprocess.PIPE,
        stdout=saved,
        stderr=saved,
        env={**os.environ, "LC_ALL": "C"},
        start_new_session=True,  # a Ctrl-C to the job does not end the filter first
    )
    os.dup2(child.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        child.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)  # it has printed all it was given
        os.close(saved)


def load() -> None:
    """Import TensorFlow and probe its devices (once a process), the noise filtered."""
    if "tensorflow" in sys.modules:
        return
    with filtered_stderr(noise()):
        import tensorflow as tf

        tf.config.list_physical_devices()
