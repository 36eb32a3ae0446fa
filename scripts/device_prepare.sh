#!/usr/bin/env bash
# Before a run of scripts/device_check.sh on a lent GPU machine (Python 3.12, torch and
# transformers but no Flower, pydantic or datasets, no network): download, for Python 3.12
# on x86-64, the wheels of the packages the engines check imports that the machine lacks,
# at the versions installed in this environment, into .whl/; and copy SmolLM2's config and
# tokenizer and the corpus into .devcarry/ (scripts/device_engines.py --prepare). Both
# folders are in .gitignore and travel with the device
# tool's `carry` (about 25 MiB together).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
PACKAGES="flwr flwr-datasets pydantic pydantic_core annotated-types typing-inspection typing_extensions
cryptography cffi pycryptodome datasets dill multiprocess grpcio grpcio-health-checking protobuf iterators"
mkdir -p .whl
for name in $PACKAGES; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$name==$version"
done
"$PY" scripts/device_engines.py --prepare
du -sh .whl .devcarry
