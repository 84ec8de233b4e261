#!/usr/bin/env bash
# Creates .venv-test/ (at the repo root) with Alembic and pyarrow: the collectors' end-to-end test
# runs a real migration tool, the projection test reads the Parquet files with pyarrow
# (`shiplog migrate -- alembic upgrade head` against SQLite). Idempotent: does nothing when
# .venv-test/bin/alembic already runs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-test
if [ -x "$VENV/bin/alembic" ] && "$VENV/bin/alembic" --version >/dev/null 2>&1 && "$VENV/bin/python" -c "import pyarrow" 2>/dev/null; then
  echo "setup-test-python: $VENV/bin/alembic is ready ($("$VENV/bin/alembic" --version))"
  exit 0
fi
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup-test-python: $PY not found; install python3 (and python3-venv)" >&2
  exit 1
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'alembic>=1.13,<2' 'pyarrow>=15'
echo "setup-test-python: installed $("$VENV/bin/alembic" --version) in $VENV"
