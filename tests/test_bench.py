"""`fedzo bench zo` runs on the tiny model and reports the documented keys."""

import json

from fedzo.bench.zo import format_report
from fedzo.cli import main


def test_bench_zo_tiny_reports_ratios(capsys) -> None:
    rc = main(["bench", "zo", "--model", "tiny", "--batch", "2", "--seq", "8", "--repeats", "1",
               "--no-compile", "--threads", "1", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("step_over_two_forwards", "memory_over_inference", "forward_seconds", "mezo_reference",
                "backprop_adam"):
        assert key in r
    assert r["step_over_two_forwards"] > 0.5 and r["memory_over_inference"] > 0.5
    assert len(r["variants"]) == 4
    frac = r["regeneration_fraction_of_copy_bandwidth"]
    assert frac == r["copy_seconds"] / r["variants"][0]["regeneration_seconds"] and 0 < frac
    assert r["trainable_bytes"] > 0 and "regeneration_fraction_of_copy_bandwidth = " in format_report(r)
