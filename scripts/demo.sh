#!/usr/bin/env bash
# From nothing to a predictions CSV: creates .venv, installs genre-job, generates the
# synthetic demo dataset, trains both models briefly, predicts, and says where the CSV is.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV="${VENV:-.venv}"
WORK="${WORK:-demo-run}"
EPOCHS="${EPOCHS:-5}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e .
JOB="$VENV/bin/genre-job"

rm -rf "$WORK"
"$JOB" demo-data --output "$WORK/data"
# The demo set is tiny: a higher learning rate and short overviews keep this to minutes.
"$JOB" train --model cnn --data "$WORK/data" --output "$WORK/runs/cnn-001" \
    --epochs "$EPOCHS" --learning-rate 1e-3 --batch-size 32
"$JOB" train --model lstm --data "$WORK/data" --output "$WORK/runs/lstm-001" \
    --epochs "$EPOCHS" --learning-rate 3e-3 --batch-size 32 --sequence-length 24
"$JOB" predict --model-dir "$WORK/runs/lstm-001" --data "$WORK/data" \
    --output "$WORK/predictions.csv"

echo
echo "predictions CSV: $(cd "$WORK" && pwd)/predictions.csv"
echo "runs (metrics.json, history.csv, tensorboard/, model.keras): $(cd "$WORK" && pwd)/runs"
