"""Experiments that reproduce fedzo's key results; each writes data and figures under analysis/results/."""
