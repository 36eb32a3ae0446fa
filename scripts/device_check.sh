#!/usr/bin/env bash
# The one prepared GPU check (see scripts/device_check.py): known-answer vectors of the
# portable generator on the device (eager and compiled), ZO and backprop step timings
# against two forward passes, and peak allocated memory against the memory model, on
# SmolLM2-135M built from its config. Needs torch and transformers only; at most 5
# minutes. Writes one JSON: $OUT/device_check.json on the lent machine (the device tool
# sets OUT), else analysis/results/device/device_check.json. Extra arguments go to the
# Python script (e.g. --device cpu --model tiny-llama for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-analysis/results/device}"
mkdir -p "$out"
PY="${PYTHON:-python3}"
timeout 300 "$PY" scripts/device_check.py --out "$out/device_check.json" "$@"
