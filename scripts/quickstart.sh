#!/usr/bin/env bash
# Set up a virtual environment (if none is active), install fedzo from the locked
# environment (constraints.txt), and run the quickstart. This is the README's main
# command. Extra arguments go to `fedzo`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q -c constraints.txt --upgrade pip
python -m pip install -q -c constraints.txt -e .
fedzo run scenarios/quickstart.yaml --force "$@"
