"""Benchmark 5: peak resident memory of `genre-job train --model cnn` on the whole real
dataset (one epoch), measured from the parent as the child's maximum RSS.

    python scripts/bench_memory.py [DATASET_ROOT] [EPOCHS]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile

import benchlib


def main() -> None:
    root = benchlib.data_root(sys.argv)
    epochs = sys.argv[2] if len(sys.argv) > 2 else "1"
    with tempfile.TemporaryDirectory() as output:
        subprocess.run(
            benchlib.train_command("cnn", str(root), f"{output}/run", "--epochs", epochs),
            cwd=benchlib.ROOT,
            check=True,
            capture_output=True,
        )
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    benchlib.emit("memory", "train_cnn_peak_rss", peak_kib / 1024, "MiB", epochs=int(epochs))


if __name__ == "__main__":
    main()
