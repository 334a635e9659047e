"""A training checkpoint of any decoder -> its bundle: the exporter is picked by architecture.

:func:`export_checkpoint` is what ``bci-app export CHECKPOINT --out BUNDLE`` runs: a typing
checkpoint (``brain2qwerty_v1``/``v2``) goes to
:func:`models.typing.bundle.export_typing_checkpoint`, a speech one (``speech_clip``) to
:func:`models.speech.bundle.export_speech_checkpoint`. Both return the same result (``bundle``,
``reports``, ``max_abs_diff``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from models.checkpoint import load_checkpoint
from models.export import DEFAULT_ATOL
from models.speech import bundle as speech_bundle
from models.typing import bundle as typing_bundle

#: The exporter of each architecture.
EXPORTERS: dict[str, Callable[..., dict[str, Any]]] = {
    **{arch: typing_bundle.export_typing_checkpoint for arch in typing_bundle.ARCHS},
    speech_bundle.ARCH: speech_bundle.export_speech_checkpoint,
}


def export_checkpoint(
    checkpoint: str | os.PathLike | dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    atol: float = DEFAULT_ATOL,
) -> dict[str, Any]:
    """Export a training checkpoint's best model as a decoder bundle in ``out_dir``.

    Parameters
    ----------
    checkpoint : path | dict
        ``checkpoint.pt`` written by training, or its loaded payload.
    out_dir : path
        The bundle folder (created if missing).
    name : str | None
        Decoder name in the manifest (default: the checkpoint's).
    atol : float
        Bound on ``max |onnxruntime - torch|`` of every graph.

    Returns
    -------
    result : dict
        ``bundle`` (the :class:`~bci_app.decoders.bundle.Bundle`), ``reports`` (per graph, from
        :func:`models.export.export_onnx`) and ``max_abs_diff`` (per graph).

    Raises
    ------
    ValueError
        For a corrupt or foreign checkpoint, or an architecture without an exporter.
    models.export.ExportMismatchError
        If a graph's onnxruntime output differs from torch's by more than ``atol``.
    """
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    arch = payload["meta"].get("arch")
    if arch not in EXPORTERS:
        raise ValueError(
            f"Invalid checkpoint: its decoder architecture {arch!r} has no bundle exporter "
            f"(known: {', '.join(sorted(EXPORTERS))}). Give a checkpoint.pt written by "
            "'bci-app train'."
        )
    return EXPORTERS[arch](payload, out_dir, name=name, atol=atol)
