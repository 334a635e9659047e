"""Training report: learning curves, test confusion matrix and CER per test sentence (PNG + HTML).

:func:`write_report` draws three PNG figures with matplotlib (its Agg canvas, no GUI, no global
pyplot state) and one self-contained ``report.html`` with the figures embedded as base64, the
metrics, the dataset counts (windows kept, dropped invalid, ...) and every test sentence with
its prediction(s).

Confusion matrix: v1 pairs each keystroke's class with the transformer's argmax. v2 predictions
need not align with the keystrokes, so target and greedy CTC prediction are aligned by edit
distance and matched or substituted characters are counted (insertions and deletions are not).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from bci_app._optional import import_optional
from bci_app.typing.alphabet import CLASSES, DISPLAY_CHARS, N_CLASSES

_FIGURES = ("learning_curves", "confusion", "sentence_cer")


def align_pairs(target: str, prediction: str) -> list[tuple[str, str]]:
    """Characters paired by a minimal edit alignment (matches and substitutions only).

    A small dynamic programme of our own: the project's CER needs only the distance, and no
    installed library returns the alignment.
    """
    n, m = len(target), len(prediction)
    cost = np.zeros((n + 1, m + 1), dtype=int)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(
                cost[i - 1, j] + 1,
                cost[i, j - 1] + 1,
                cost[i - 1, j - 1] + (target[i - 1] != prediction[j - 1]),
            )
    pairs, i, j = [], n, m
    while i > 0 and j > 0:
        if cost[i, j] == cost[i - 1, j - 1] + (target[i - 1] != prediction[j - 1]):
            pairs.append((target[i - 1], prediction[j - 1]))
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def confusion_matrix(test: dict[str, Any]) -> np.ndarray:
    """Counts ``(29, 29)``: rows typed class, columns predicted class, on the test split."""
    matrix = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    if "keys" in test:
        targets, predictions = test["keys"][0], test["keys"][1]
    else:
        rows = test["sentences"]
        pairs = [p for row in rows for p in align_pairs(row["target"], row["prediction"])]
        targets = np.array([DISPLAY_CHARS.index(t) for t, _ in pairs], dtype=int)
        predictions = np.array([DISPLAY_CHARS.index(p) for _, p in pairs], dtype=int)
    np.add.at(matrix, (np.asarray(targets, int), np.asarray(predictions, int)), 1)
    return matrix


def _learning_curves(figure, history: dict[str, list], metrics: dict[str, Any]) -> None:
    epochs = np.arange(1, len(history.get("train_loss", [])) + 1)
    loss_axes, cer_axes = figure.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        if key in history:
            loss_axes.plot(epochs, history[key], marker="o", label=label)
    loss_axes.set(xlabel="epoch", ylabel="loss", title="Loss")
    curves = (
        ("train_cer", "train"),
        ("val_cer", "validation"),
        ("val_cer_conv", "validation, conv only"),
    )
    for key, label in curves:
        if key in history:
            cer_axes.plot(epochs, history[key], marker="o", label=label)
    if "test_cer_chance" in metrics:
        cer_axes.axhline(metrics["test_cer_chance"], color="grey", ls="--", label="chance (test)")
    cer_axes.set(xlabel="epoch", ylabel="CER", title="Character error rate", ylim=(0, None))
    for axes in (loss_axes, cer_axes):
        axes.legend()
        axes.grid(alpha=0.3)


def _confusion(figure, matrix: np.ndarray) -> None:
    axes = figure.subplots()
    rows = matrix.sum(axis=1, keepdims=True)
    shown = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    image = axes.imshow(shown, cmap="viridis", vmin=0, vmax=1)
    labels = [c if len(c) == 1 else c[:3] for c in CLASSES]
    axes.set_xticks(range(N_CLASSES), labels, fontsize=7, rotation=90)
    axes.set_yticks(range(N_CLASSES), labels, fontsize=7)
    axes.set(xlabel="predicted", ylabel="typed", title="Test confusion (row-normalised)")
    figure.colorbar(image, ax=axes, fraction=0.046)


def _sentence_cer(figure, sentences: list[dict[str, Any]]) -> None:
    axes = figure.subplots()
    labels = [r["target"][:40] + ("..." if len(r["target"]) > 40 else "") for r in sentences]
    index = np.arange(len(sentences))
    conv = bool(sentences) and "cer_conv" in sentences[0]
    height = 0.4 if conv else 0.8
    label = "transformer" if conv else "greedy CTC"
    axes.barh(index, [r["cer"] for r in sentences], height, label=label)
    if conv:
        axes.barh(index + height, [r["cer_conv"] for r in sentences], height, label="conv only")
    axes.set_yticks(index + (height / 2 if height < 0.8 else 0), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set(xlabel="CER", title="CER per test sentence (argmax, no language model)")
    axes.legend()
    axes.grid(alpha=0.3, axis="x")


def _save(draw, out: Path, size: tuple[float, float], *args: Any) -> Path:
    figure_module = import_optional("matplotlib.figure")
    figure = figure_module.Figure(figsize=size, layout="constrained")
    draw(figure, *args)
    figure.savefig(out, dpi=100)
    return out


def write_report(
    out_dir: str | Path, history: dict[str, list], test: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Write the PNG figures and ``report.html`` into ``out_dir``; return the HTML's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = meta.get("metrics", {})
    n_rows = max(3.0, 0.3 * len(test["sentences"]) + 1)
    paths = [
        _save(_learning_curves, out / "learning_curves.png", (10, 4), history, metrics),
        _save(_confusion, out / "confusion.png", (7.5, 6.5), confusion_matrix(test)),
        _save(_sentence_cer, out / "sentence_cer.png", (8, n_rows), test["sentences"]),
    ]
    page = out / "report.html"
    page.write_text(_html(meta, test, paths), encoding="utf-8")
    return page


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _html(meta: dict[str, Any], test: dict[str, Any], figures: list[Path]) -> str:
    metrics = meta.get("metrics", {})
    stats = {k: v for k, v in meta.get("dataset_stats", {}).items() if k != "per_recording"}
    images = "".join(
        f'<h2>{p.stem.replace("_", " ")}</h2><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">'
        for p in figures
    )
    conv = bool(test["sentences"]) and "prediction_conv" in test["sentences"][0]
    head = "<tr><th>typed</th><th>decoded</th>" + ("<th>conv only</th>" if conv else "")
    head += "<th>CER</th>" + ("<th>CER conv</th>" if conv else "") + "</tr>"
    body = ""
    for row in test["sentences"]:
        cells = [row["target"], row["prediction"]] + ([row["prediction_conv"]] if conv else [])
        cells += [f"{row['cer']:.3f}"] + ([f"{row['cer_conv']:.3f}"] if conv else [])
        body += "<tr>" + "".join(f"<td><code>{html.escape(c)}</code></td>" for c in cells) + "</tr>"
    title = html.escape(f"Training report: {meta.get('name', '')} ({meta.get('arch', '')})")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}img{max-width:100%}"
        f"</style></head><body><h1>{title}</h1>"
        f"<h2>Metrics</h2>{_table(list(metrics.items()))}"
        f"<h2>Dataset</h2>{_table([*stats.items(), ('split', meta['data']['split'])])}"
        f"{images}<h2>Test sentences</h2><table>{head}{body}</table>"
        f"<h2>Provenance</h2>{_table(list(meta.get('provenance', {}).items()))}"
        "</body></html>"
    )
