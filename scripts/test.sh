#!/usr/bin/env bash
# Set up a virtual environment (if none is active), install fedzo with its test extras from
# the locked environment (constraints.txt), lint the repository, type-check the package, and
# run the test suite. This is the README's test command; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q -c constraints.txt --upgrade pip
python -m pip install -q -c constraints.txt -e ".[test]"
python -m ruff check .
python -m mypy
python -m pytest -q "$@"
