#!/usr/bin/env bash
# Create .venv with the test extras and run the whole test suite (CPU only); arguments go to
# pytest: `scripts/test.sh -m "not slow"` is the quick tier (no training runs, benchmarks
# or job subprocesses). Works on a fresh machine with Python 3.11 and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# uv installs the 2.7 GB of wheels in seconds where pip takes most of a minute; pip stays
# the fallback for a machine where uv cannot be had or cannot reach the index. Compiled to
# bytecode at install, as pip does: where PYTHONDONTWRITEBYTECODE is set, every job the tests start
# would otherwise compile TensorFlow's Python again.
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! { "$VENV/bin/python" -m pip install --quiet uv==0.13.9 \
        && "$VENV/bin/uv" pip install --quiet --compile-bytecode --python "$VENV/bin/python" \
            -e ".[test]"; }; then
    echo "uv could not install the test environment; installing with pip"
    "$VENV/bin/python" -m pip install --quiet -e ".[test]"
fi

"$VENV/bin/ruff" check job tests scripts
"$VENV/bin/python" -m pytest "$@"
