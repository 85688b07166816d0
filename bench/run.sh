#!/usr/bin/env bash
# Set up from a clean checkout and run `celeriac bench` (extra arguments are passed on).
# The set-up (pip, the Cython build) runs when something is missing or a build input is newer
# than the compiled hot path, so a second run starts at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

set_up() {
  [ -x .venv/bin/celeriac ] || return 1
  local built
  built=$(ls src/celeriac/_speedups/message*.so 2> /dev/null | head -n 1)
  [ -n "$built" ] || return 1
  [ -z "$(find pyproject.toml setup.py _speedups -newer "$built" -print -quit)" ] || return 1
  .venv/bin/python -c "import celery, matplotlib, celeriac._speedups.message" 2> /dev/null
}

if ! set_up; then
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip "setuptools>=77" wheel "Cython>=3.0,<4"
  .venv/bin/python -m pip install -q -e '.[bench]'
  .venv/bin/python setup.py -q build_ext --inplace
fi
exec .venv/bin/celeriac bench "$@"
