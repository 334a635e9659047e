"""Turn a training checkpoint into a decoder bundle: verified ONNX graphs, manifest and LM.

:func:`export_typing_checkpoint` rebuilds the model from a checkpoint's description
(:func:`models.registry.model_from_checkpoint`), exports every graph with
:func:`models.export.export_model` (dynamo exporter, checked in onnxruntime against torch) and
writes the bundle with :func:`bci_app.decoders.bundle.save_bundle`. Training calls it on its final
checkpoint; ``bci-app export CHECKPOINT --out BUNDLE`` on any (through
:func:`models.bundles.export_checkpoint`, which picks the typing or the speech exporter).

Manifest keys (besides ``format``, ``format_version`` and ``graphs``, filled by ``save_bundle``):

- ``name``, ``task: "typing"``, ``arch`` (``brain2qwerty_v1`` | ``brain2qwerty_v2``),
  ``model_config`` (the config's ``to_dict()``);
- ``stream: {sfreq, channels}``: the input rate and the picked channels (``ChannelSpec.to_dict``);
- ``preprocessing``: ``PreprocessConfig.to_dict()`` with the scaler statistics (median over the
  training recordings of each one's median/IQR; see :mod:`models.typing.data`); v2 also clamps here;
- ``window: {tmin, tmax, sfreq, baseline, clamp}`` (v1: keystroke windows);
  ``ctc: {blank, frame_stride, frame_s}`` (v2);
- ``classes`` (the 29 of :mod:`bci_app.typing.alphabet`), ``lm: {file: "lm.npz", order, weight}``
  (v1: the weight fitted on the validation sentences, ``metrics.lm_fit``; else the default),
  ``decoding: {top_k, beam_width}``, ``subject: {n_subjects, default, labels}``;
- ``provenance`` (created, versions, recordings, seed, config, git commit) and ``metrics``;
- ``export``: the largest |onnxruntime - torch| of each graph and the bound it was checked against.

Graph roles: v1 ``keystroke`` (window -> embedding, conv-only logits) and ``sentence``
(embeddings -> logits); v2 ``ctc`` (continuous data -> log-probabilities, blank last).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from bci_app.decoders.bundle import save_bundle
from bci_app.lm.beam import DEFAULT_LM_WEIGHT
from bci_app.typing.alphabet import CLASSES
from models.checkpoint import load_checkpoint
from models.export import DEFAULT_ATOL, export_model, quiet_exporter, trained_sections
from models.registry import model_from_checkpoint
from models.typing.config import BLANK_INDEX

#: The architectures this module exports.
ARCHS = ("brain2qwerty_v1", "brain2qwerty_v2")
LM_FILE = "lm.npz"
LM_ORDER = 6
#: Beam search defaults of the paper: top-5 characters per keystroke, beam of 30.
DECODING = {"top_k": 5, "beam_width": 30}


def lm_weight(meta: dict[str, Any]) -> float:
    """The LM weight fitted on the validation sentences at training, else the default."""
    fit = (meta.get("metrics") or {}).get("lm_fit") or {}
    return float(fit.get("weight", DEFAULT_LM_WEIGHT))


def manifest_from_meta(meta: dict[str, Any], reports: dict[str, dict]) -> dict[str, Any]:
    """The bundle manifest (module docstring) of a checkpoint description and export reports."""
    manifest = {
        "name": meta["name"],
        "task": "typing",
        "arch": meta["arch"],
        "model_config": meta["model_config"],
        "stream": {"sfreq": meta["sfreq_in"], "channels": meta["channels"]},
        "preprocessing": meta["preprocessing"],
        "classes": list(CLASSES),
        "lm": {"file": LM_FILE, "order": LM_ORDER, "weight": lm_weight(meta)},
        "decoding": dict(DECODING),
        **trained_sections(meta, reports),
    }
    if meta["arch"] == "brain2qwerty_v1":
        manifest["window"] = dict(meta["window"])
    else:
        stride = meta["model_config"]["frame_stride"]
        sfreq = meta["model_config"]["sfreq"]
        manifest["ctc"] = {"blank": BLANK_INDEX, "frame_stride": stride, "frame_s": stride / sfreq}
    return manifest


def export_typing_checkpoint(
    checkpoint: str | os.PathLike | dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    atol: float = DEFAULT_ATOL,
) -> dict[str, Any]:
    """Export a typing checkpoint's best model as a decoder bundle in ``out_dir``.

    Returns
    -------
    result : dict
        ``bundle`` (the :class:`~bci_app.decoders.bundle.Bundle`), ``reports`` (per graph, from
        :func:`models.export.export_onnx`) and ``max_abs_diff`` (per graph).

    Raises
    ------
    ValueError
        For a corrupt or foreign checkpoint, or one of another decoder (speech).
    models.export.ExportMismatchError
        If a graph's onnxruntime output differs from torch's by more than ``atol``.
    """
    from bci_app.lm.model import default_lm

    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    meta = dict(payload["meta"])
    if meta.get("arch") not in ARCHS:
        raise ValueError(
            f"Invalid checkpoint: it holds a {meta.get('arch')!r} decoder, not a typing decoder "
            f"({', '.join(ARCHS)}). Export it with 'bci-app export', which picks the exporter "
            "of the checkpoint's decoder."
        )
    if name is not None:
        meta["name"] = name
    model = model_from_checkpoint(payload)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="bci-export-") as tmp, quiet_exporter():
        reports = export_model(model, tmp, atol=atol)
        graphs = {role: Path(report["path"]) for role, report in reports.items()}
        out.mkdir(parents=True, exist_ok=True)
        default_lm(LM_ORDER).save(out / LM_FILE)
        bundle = save_bundle(out, manifest_from_meta(meta, reports), graphs)
    for report in reports.values():
        report["path"] = str(out / Path(report["path"]).name)
    return {
        "bundle": bundle,
        "reports": reports,
        "max_abs_diff": {role: r["max_abs_diff"] for role, r in reports.items()},
    }
