#!/usr/bin/env bash
# Set up from a clean checkout and run `celeriac bench` (extra arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip "setuptools>=77" wheel "Cython>=3.0,<4"
.venv/bin/python -m pip install -q -e '.[bench]'
.venv/bin/python setup.py -q build_ext --inplace
exec .venv/bin/celeriac bench "$@"
