"""``bci-app bench``'s graph timings: sizes, providers, torch comparison, strict JSON."""

from __future__ import annotations

import json
import math

import pytest

from acquisition.simulator import Simulator
from bci_app.cli.bench import format_bench, json_safe
from bci_app.cli.bench_graphs import graph_latency, paper_bundle
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.shipped import TYPING_BUNDLE
from bci_app.typing.evaluate import evaluate_bundle


def test_graph_latency_times_both_graphs_against_torch_as_strict_json():
    channels = load_bundle(TYPING_BUNDLE).channels
    result = graph_latency(channels, ["small"], ["auto"], 5, compile_mode=None)
    assert result["providers"][0] == "cpu"
    small = result["small"]
    assert 0.5e6 < small["parameters"] < 2e6
    fp32 = small["ort_cpu"]["fp32"]
    for graph in ("keystroke", "sentence"):
        assert fp32[graph]["provider"] == "CPUExecutionProvider"
        assert 0 < fp32[graph]["p50_ms"] <= fp32[graph]["p99_ms"] and fp32[graph]["n"] == 5
    assert small["torch"]["device"] == "cpu" and small["torch"]["eager"]["p50_ms"] > 0
    assert small["torch"]["compile"].startswith("skipped")
    json.dumps(result, allow_nan=False)  # machine-readable as it is
    text = "\n".join(
        line for line in format_bench_graphs(result).splitlines() if "ORT cpu fp32" in line
    )
    assert "keystroke" in text and "sentence" in text


def format_bench_graphs(graphs: dict) -> str:
    """format_bench on a result holding only the graph section (the replay is another test)."""
    result = {
        "bundle": "b",
        "host_cpus": 2,
        "provider": "CPUExecutionProvider",
        "max_speed": {"recording_s": 1.0, "wall_s": 1.0, "x_real_time": 1.0, "windows": 0},
        "inference": {"ort_bundle": {"provider": "cpu", "p50_ms": 1.0, "p99_ms": 1.0}},
        "graphs": graphs,
    }
    return format_bench(result)


def test_json_safe_turns_nan_into_null():
    value = json_safe({"a": [1.0, math.nan], "b": {"c": math.inf}, "d": "x"})
    assert value == {"a": [1.0, None], "b": {"c": None}, "d": "x"}


@pytest.mark.slow
def test_paper_size_bundle_decodes_through_the_runtime(tmp_path):
    """The untrained paper-size copy the bench replays: loads, checks, decodes every key."""
    bundle = paper_bundle(load_bundle(TYPING_BUNDLE), tmp_path / "paper")
    assert bundle.manifest.model_config["hidden"] == 320  # the paper preset
    recording = Simulator("meg", "typing", snr=2.0, subject=0, seed=3).generate(15.0)
    reports = [evaluate_bundle(b, [recording], provider="cpu") for b in (TYPING_BUNDLE, bundle)]
    assert reports[1]["provider"] == "CPUExecutionProvider"
    # every key the trained small decoder decodes, the paper-size graphs decode too
    decoded = [sum(s["n_decoded"] for s in r["recordings"][0]["sentences"]) for r in reports]
    assert decoded[1] == decoded[0] > 5
