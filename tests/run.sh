#!/usr/bin/env bash
# Set up from a clean checkout and run every check: the suite compiled and pure, ruff, mypy.
#   bash tests/run.sh            everything
#   bash tests/run.sh -k retry   extra arguments go to both pytest runs
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip "setuptools>=77" wheel "Cython>=3.0,<4"
# a normal install compiles the Cython hot path (build deps come from pyproject.toml)
.venv/bin/python -m pip install -q -e '.[test]'
# editable installs may reuse a stale build; rebuild the extensions in place to be sure
.venv/bin/python setup.py -q build_ext --inplace

run_pytest() {
  # pytest's exit code 5 (no tests collected) is a failure here, like any other non-zero
  .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
}

echo "== tests, compiled hot path (CELERIAC_REQUIRE_EXTENSIONS=1)"
CELERIAC_REQUIRE_EXTENSIONS=1 .venv/bin/celeriac --version
CELERIAC_REQUIRE_EXTENSIONS=1 run_pytest "$@"

echo "== tests, pure-Python twin (CELERIAC_NO_EXTENSIONS=1)"
CELERIAC_NO_EXTENSIONS=1 .venv/bin/celeriac --version
CELERIAC_NO_EXTENSIONS=1 run_pytest "$@"

echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench

echo "== mypy --strict src/"
.venv/bin/mypy --strict src/celeriac
