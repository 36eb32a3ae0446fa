#!/usr/bin/env bash
# Refresh constraints.txt, the locked environment that scripts/quickstart.sh, scripts/test.sh
# and .ci/run install with (`pip install -c constraints.txt`).
#
# It resolves pyproject.toml's open ranges afresh (fedzo with its test extras) in a throwaway
# virtual environment and pins every installed package, pip and setuptools included. torch
# stays the local CPU build (`torch==2.13.0`, its `+cpu` label dropped so that the pin
# matches the file on disk). Run it on purpose, then re-measure the documented hashes in the
# same commit: `bash scripts/lock.sh && bash scripts/known_hashes.sh` (docs/reproducibility.md).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$ver" != "3.11" ]; then
  echo "lock.sh: the lock is resolved on Python 3.11 (these machines' Python); $py is $ver" >&2
  exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv "$tmp/venv"
# shellcheck disable=SC1091
. "$tmp/venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test]"
{
  echo "# The locked environment: every package fedzo and its tests install, at one version each."
  echo "# Made by scripts/lock.sh on $(date -u +%Y-%m-%d) (Python $(python -c 'import platform; print(platform.python_version())'), $(uname -m)); do not edit by hand."
  echo "# Install with: pip install -c constraints.txt -e \".[test]\""
  python -m pip freeze --all --exclude-editable | grep -v '^#' | sed -E 's/^(torch==[0-9.]+)\+cpu$/\1/' | LC_ALL=C sort -f
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
echo "lock.sh: wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
