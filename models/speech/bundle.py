"""The speech decoder's bundle and report, from a training checkpoint.

:func:`export_speech_checkpoint` writes the bundle of a speech checkpoint (training calls it on
its final one, :mod:`models.training.speech_task`; ``bci-app export`` through
:func:`models.bundles.export_checkpoint`); :func:`write_report` draws the training report.

Bundle (``task: "speech"``): ``brain.onnx`` and ``audio.onnx`` (:class:`models.speech.SpeechClip`
graphs, checked in onnxruntime), ``candidates.npz`` + ``candidates.json`` (the candidate set:
one per distinct word heard in the training recordings, its embedding the normalised mean of
the audio embeddings of the 3 s segments starting at that word), and a manifest with ``stream``,
``preprocessing`` (0.1 Hz high-pass, 120 Hz, pooled scaler), ``window`` (brain window relative to
the word onset, baseline, clamp, audio span and brain shift), ``audio_features`` (what turns audio
into the input of ``audio.onnx``: log-mel parameters, or a local pretrained model's folder, layers
and fingerprint, :mod:`bci_app.speech.extractors`; bundles without it have ``mel``),
``logit_scale``, ``subject``, ``provenance``, ``metrics`` and ``export``.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bci_app._optional import import_optional
from bci_app.decoders.bundle import save_bundle
from bci_app.speech.decoder import normalize, save_candidates
from bci_app.speech.extractors import audio_features_spec
from models.checkpoint import load_checkpoint
from models.export import DEFAULT_ATOL, export_model, quiet_exporter, trained_sections
from models.registry import model_from_checkpoint

#: The architecture this module exports.
ARCH = "speech_clip"


def word_prototypes(words: list[str], audio: np.ndarray) -> tuple[list[str], np.ndarray]:
    """One candidate per distinct (lower-cased) word: the mean of its unit audio embeddings."""
    keys = [w.lower() for w in words]
    texts = sorted(set(keys))
    unit = normalize(audio)
    index = {t: i for i, t in enumerate(texts)}
    sums = np.zeros((len(texts), unit.shape[1]), np.float32)
    np.add.at(sums, [index[k] for k in keys], unit)
    return texts, normalize(sums)


def export_speech_checkpoint(
    checkpoint: str | Path | dict[str, Any],
    out_dir: str | Path,
    *,
    name: str | None = None,
    atol: float = DEFAULT_ATOL,
) -> dict[str, Any]:
    """Export a speech checkpoint's best model and candidates as a bundle in ``out_dir``.

    Returns
    -------
    result : dict
        ``bundle`` (the :class:`~bci_app.decoders.bundle.Bundle`), ``reports`` (per graph, from
        :func:`models.export.export_onnx`, paths in ``out_dir``) and ``max_abs_diff`` (per graph).

    Raises
    ------
    ValueError
        For a corrupt or foreign checkpoint, one of another decoder (typing), or one without
        its candidate set (a per-epoch checkpoint: export the final ``checkpoint.pt``).
    models.export.ExportMismatchError
        If a graph's onnxruntime output differs from torch's by more than ``atol``.
    """
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    meta = dict(payload["meta"])
    if meta.get("arch") != ARCH or "candidates" not in payload:
        raise ValueError(
            f"Invalid checkpoint: it holds a {meta.get('arch')!r} decoder without a speech "
            "candidate set. Give the final checkpoint.pt of 'bci-app train speech' (per-epoch "
            "checkpoints have no candidates); 'bci-app export' picks the exporter of typing ones."
        )
    model = model_from_checkpoint(payload)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="bci-export-") as tmp, quiet_exporter():
        reports = export_model(model, tmp, atol=atol)
        manifest = {
            "name": name or meta["name"],
            "task": "speech",
            "arch": ARCH,
            "model_config": meta["model_config"],
            "stream": {"sfreq": meta["sfreq_in"], "channels": meta["channels"]},
            "preprocessing": meta["preprocessing"],
            "window": meta["window"],
            "audio_features": audio_features_spec(meta.get("audio_features"), meta.get("mel")),
            "logit_scale": float(model.logit_scale.detach().clamp(max=np.log(100.0)).exp()),
            "decoding": {"top_k": 10},
            **trained_sections(meta, reports),
        }
        out.mkdir(parents=True, exist_ok=True)
        bundle = save_bundle(out, manifest, {r: Path(v["path"]) for r, v in reports.items()})
    candidates = payload["candidates"]
    save_candidates(out, candidates["texts"], candidates["embeddings"].numpy())
    for report in reports.values():
        report["path"] = str(out / Path(report["path"]).name)
    return {
        "bundle": bundle,
        "reports": reports,
        "max_abs_diff": {role: r["max_abs_diff"] for role, r in reports.items()},
    }


def write_report(out_dir: Path, history: dict, test: dict, meta: dict) -> Path:
    """Learning curves and the test rank histogram (PNG) and ``report.html``."""
    figure_module = import_optional("matplotlib.figure")
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = meta.get("metrics", {})
    curves = figure_module.Figure(figsize=(10, 4), layout="constrained")
    loss_axes, top_axes = curves.subplots(1, 2)
    epochs = np.arange(1, len(history.get("train_loss", [])) + 1)
    for key in ("train_loss", "val_loss"):
        loss_axes.plot(epochs, history.get(key, []), marker="o", label=key.replace("_", " "))
    for key in ("val_top1", "val_top10"):
        top_axes.plot(epochs, history.get(key, []), marker="o", label=key.replace("_", " "))
    if "val_chance_top10" in metrics:
        top_axes.axhline(metrics["val_chance_top10"], color="grey", ls="--", label="chance top-10")
    loss_axes.set(xlabel="epoch", ylabel="CLIP loss", title="Loss")
    top_axes.set(xlabel="epoch", ylabel="accuracy", title="Validation retrieval", ylim=(0, 1))
    for axes in (loss_axes, top_axes):
        axes.legend()
        axes.grid(alpha=0.3)
    curves.savefig(out_dir / "learning_curves.png", dpi=100)
    ranks = figure_module.Figure(figsize=(6, 4), layout="constrained")
    axes = ranks.subplots()
    n = max(test["n_candidates"], 1)
    axes.hist(test["ranks"], bins=np.arange(n + 1) - 0.5, color="tab:blue")
    axes.axvline(9.5, color="grey", ls="--", label="top-10")
    axes.set(
        xlabel="rank of the true segment (0 = best)",
        ylabel="windows",
        title=f"Test ranks among N={n} segments",
    )
    axes.legend()
    ranks.savefig(out_dir / "rank_histogram.png", dpi=100)
    images = "".join(
        f'<h2>{p}</h2><img src="data:image/png;base64,'
        f'{base64.b64encode((out_dir / p).read_bytes()).decode()}">'
        for p in ("learning_curves.png", "rank_histogram.png")
    )
    cell = lambda v: html.escape(json.dumps(v) if isinstance(v, dict) else str(v))  # noqa: E731
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{cell(v)}</td></tr>" for k, v in metrics.items()
    )
    page = out_dir / "report.html"
    page.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Speech decoder "
        f"{html.escape(meta['name'])}</title></head><body><h1>Speech decoder "
        f"{html.escape(meta['name'])}</h1><table>{rows}</table>{images}</body></html>",
        encoding="utf-8",
    )
    return page
