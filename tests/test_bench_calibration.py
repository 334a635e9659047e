"""scripts/bench_calibration.py: the minutes read off a curve, its table and its PNG.

The training runs themselves are the ones of ``bci-app train`` (tested in tests/models); the
script's --quick run takes minutes, so it is run by hand (its output is in the lead's notes).
"""

from __future__ import annotations

import pytest

from scripts.bench_calibration import format_results, minutes_to_reach, plot


def test_minutes_to_reach_interpolates_between_measured_points():
    assert minutes_to_reach([2, 5, 10], [0.6, 0.4, 0.2], 0.3) == pytest.approx(7.5)
    assert minutes_to_reach([2, 5], [0.25, 0.1], 0.3) == 2
    assert minutes_to_reach([2, 5], [0.6, 0.5], 0.3) is None


def test_table_and_png_show_both_ways(tmp_path):
    def cer(mean):
        return {"mean": mean, "low": mean - 0.05, "high": mean + 0.05, "values": [mean] * 2}

    rows = [
        {"minutes": m, "way": way, "cer": {v: cer(c) for v in ("conv", "transformer", "lm")}}
        for way, curve in (("scratch", (0.7, 0.4)), ("pretrained", (0.4, 0.2)))
        for m, c in zip((2.0, 5.0), curve, strict=True)
    ]
    settings = {
        "modality": "meg",
        "difficulty": "paper",
        "snr": 0.25,
        "subject": 5,
        "pretrain_subjects": [1, 2, 3, 4],
        "pretrain_minutes": 4.0,
        "epochs": 12,
        "held_out_seeds": [2000, 2001],
        "test_seconds": 60.0,
        "target": 0.3,
    }
    reach = {"scratch": minutes_to_reach([2, 5], [0.7, 0.4], 0.3), "pretrained": 2 + 1.5}
    result = {"settings": settings, "rows": rows, "minutes_to_target": reach, "seconds": 1.0}
    table = format_results(result)
    assert "minutes to CER (+ LM) 0.3, scratch: not reached" in table
    assert "minutes to CER (+ LM) 0.3, pretrained: 3.5 min" in table
    assert "0.200 [0.150, 0.250]" in table
    png = plot(result, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
