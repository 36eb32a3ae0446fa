#!/usr/bin/env bash
# The one prepared GPU check (see scripts/device_check.py): the in-process and batched
# engines timed on the device (scripts/device_engines.py), known-answer vectors of the
# portable generator on the device (eager and compiled), ZO and backprop step timings
# against two forward passes, and peak allocated memory against the memory model, on
# SmolLM2-135M built from its config. Needs torch and transformers; the engines check also
# needs Flower and pydantic: where this Python lacks them and .whl/ holds their wheels (see
# the README's "GPU checks"), they are installed into a scratch folder first. At most 5
# minutes. Writes one JSON: $OUT/device_check.json on the lent machine (the device tool sets
# OUT), else analysis/results/device/device_check.json. Extra arguments go to the Python
# script (e.g. --device cpu --model tiny-llama --engine-participants 2 --engine-tiny 4 for a
# smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-analysis/results/device}"
mkdir -p "$out"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import flwr, pydantic" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fedzo-site .whl/*.whl
    export PYTHONPATH="/tmp/fedzo-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
timeout "${DEVICE_CHECK_SECONDS:-300}" "$PY" scripts/device_check.py --out "$out/device_check.json" "$@"
