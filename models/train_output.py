"""What a finished training run leaves behind: metrics, final checkpoint, report and bundle."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bci_app.typing.alphabet import cer, classes_to_text
from models.checkpoint import FINAL_NAME, save_checkpoint


def chance_cer(train_targets: list[np.ndarray], sentences: list[dict[str, Any]]) -> float:
    """CER of always typing the most frequent training class (a floor any decoder must beat)."""
    counts = Counter(int(c) for targets in train_targets for c in targets)
    majority = classes_to_text([counts.most_common(1)[0][0]])
    return float(np.mean([cer(majority * len(s["target"]), s["target"]) for s in sentences]))


def collect_metrics(run, results: dict[str, dict], started: float) -> dict[str, Any]:
    """Validation/test CER of the best epoch, dataset counts and run facts."""
    stats = run.dataset.stats
    train_targets = [run.dataset.sentences[i].targets for i in run.split["train"]]
    metrics: dict[str, Any] = {}
    for key in ("val", "test"):
        metrics[f"{key}_cer"] = results[key]["cer"]
        metrics[f"{key}_loss"] = results[key]["loss"]
        if "cer_conv" in results[key]:
            metrics[f"{key}_cer_conv"] = results[key]["cer_conv"]
    metrics["test_cer_chance"] = chance_cer(train_targets, results["test"]["sentences"])
    metrics["cer_kind"] = (
        "transformer argmax (cer_conv: conv-only head)"
        if run.arch == "brain2qwerty_v1"
        else "greedy CTC"
    )
    metrics["n_sentences"] = {key: len(run.sets[key]) for key in ("train", "val", "test")}
    for key in ("n_windows", "n_dropped_invalid", "n_dropped_edge", "n_skipped_keys"):
        metrics[key] = stats[key]
    metrics["n_sentences_invalid_span"] = sum(
        getattr(run.sets[key], "n_skipped", 0) for key in ("train", "val", "test")
    )
    metrics.update(
        epochs_run=run.epoch,
        best_epoch=run.best["epoch"],
        stopped_early=run.epoch < run.args["epochs"],
        train_seconds=round(time.perf_counter() - started, 2),
        world_size=run.ctx.world_size,
        device=str(run.ctx.device),
    )
    return metrics


def write_outputs(run, results: dict[str, dict], out: Path, started: float) -> dict[str, Any]:
    """Rank 0, after training: final checkpoint, report, bundle; return the metrics."""
    from models.report import write_report

    metrics = collect_metrics(run, results, started)
    run.meta["metrics"] = metrics
    checkpoint = save_checkpoint(out / FINAL_NAME, run.state(), run.meta)
    report = write_report(out / "report", run.history, results["test"], run.meta)
    paths = {"checkpoint": str(checkpoint), "report": str(report)}
    if run.given["export"]:
        from models.bundle_export import export_checkpoint

        exported = export_checkpoint(checkpoint, out)
        paths["bundle"] = str(exported["bundle"].path)
        metrics["export_max_abs_diff"] = exported["max_abs_diff"]
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    return {**metrics, "paths": paths}
