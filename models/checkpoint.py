"""Training checkpoints: state dicts, optimizer, epoch and a JSON description, read back safely.

A checkpoint is ``torch.save`` of a dict holding only tensors, numbers, strings, lists and dicts::

    {"format": "bci-app-checkpoint", "format_version": 1,
     "meta": "<JSON: arch, model config, channels, preprocessing, training arguments, metrics>",
     "epoch": 3, "model": state_dict, "best_model": state_dict, "optimizer": ..., "scheduler": ...,
     "scaler": ..., "history": {...}, "best": {...}, "rng": {...}}

It is read with ``torch.load(..., weights_only=True)`` only: a file that needs arbitrary
unpickling (a foreign or tampered checkpoint) is refused with a clear error, never executed.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from bci_app.decoders.bundle import sha256_file
from models.layers import SpatialAttention, SubjectLayer

FORMAT = "bci-app-checkpoint"
FORMAT_VERSION = 1
#: Name of the final checkpoint written next to the bundle's files.
FINAL_NAME = "checkpoint.pt"
#: Folder (inside the output directory) of the per-epoch checkpoints that ``--resume`` reads.
EPOCHS_DIR = "checkpoints"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``state`` plus the JSON ``meta`` to ``path`` atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": json.dumps(meta)}
    payload.update(state)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; ``meta`` comes back as a dict.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is corrupt or truncated, needs unsafe unpickling, or is not a bci-app
        checkpoint (or one of a newer format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint not found: '{path}'. Give the checkpoint.pt written by 'bci-app train' "
            f"(or a file of its {EPOCHS_DIR}/ folder)."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"Corrupt or foreign checkpoint '{path}': it cannot be read as plain tensors and "
            f"values (torch.load with weights_only=True: {first}). Only checkpoints written by "
            "'bci-app train' are read; files needing arbitrary unpickling are refused."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"Foreign checkpoint '{path}': it is not a bci-app training checkpoint (format "
            f"{found!r}, expected {FORMAT!r}). Give the checkpoint.pt written by 'bci-app train'."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"Checkpoint '{path}' has format version {version!r}; this bci-app reads up to "
            f"{FORMAT_VERSION}. Upgrade bci-app."
        )
    try:
        payload["meta"] = json.loads(payload["meta"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"Corrupt checkpoint '{path}': its description is unreadable ({err})."
        ) from None
    return payload


def resolve_resume(path: str | os.PathLike) -> Path:
    """Return the checkpoint to resume from: ``path`` itself, or the newest one in a folder.

    A folder may be the training output (its ``checkpoints/`` are searched) or the
    ``checkpoints/`` folder itself.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        folder = path / EPOCHS_DIR if (path / EPOCHS_DIR).is_dir() else path
        found = sorted(folder.glob("epoch_*.pt"))
        if found:
            return found[-1]
        raise FileNotFoundError(
            f"No checkpoint to resume from in '{path}': no epoch_*.pt files in '{folder}'."
        )
    raise FileNotFoundError(f"Invalid value for 'resume': '{path}' does not exist.")


def epoch_path(out_dir: str | os.PathLike, epoch: int) -> Path:
    """Path of the checkpoint written after ``epoch`` (1-based)."""
    return Path(out_dir) / EPOCHS_DIR / f"epoch_{epoch:04d}.pt"


def discard_epochs_after(out_dir: str | os.PathLike, epoch: int) -> int:
    """Delete per-epoch checkpoints later than ``epoch`` (left by an earlier run); return how many.

    A run that starts at ``epoch`` in a folder holding checkpoints of another run would otherwise
    leave them there, and resuming from the folder would pick the stale newest one.
    """
    stale = [
        path
        for path in (Path(out_dir) / EPOCHS_DIR).glob("epoch_*.pt")
        if path.stem[6:].isdigit() and int(path.stem[6:]) > epoch
    ]
    for path in stale:
        path.unlink()
    return len(stale)


def prune_epochs(out_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` per-epoch checkpoints."""
    found = sorted((Path(out_dir) / EPOCHS_DIR).glob("epoch_*.pt"))
    for old in found[: max(0, len(found) - keep)]:
        old.unlink()


def resolve_init(path: str | os.PathLike) -> Path:
    """Return the checkpoint an ``init`` setting names: the file, or a training folder's final one.

    Raises
    ------
    FileNotFoundError
        If ``path`` is neither a file nor a folder holding ``checkpoint.pt``.
    """
    path = Path(path)
    if path.is_file():
        return path
    if (path / FINAL_NAME).is_file():
        return path / FINAL_NAME
    raise FileNotFoundError(
        f"Invalid value for 'init': '{path}' is not a checkpoint file nor a training output "
        f"folder holding {FINAL_NAME}. Give the {FINAL_NAME} of the pretrained run."
    )


def subject_parameters(model: torch.nn.Module) -> list[str]:
    """State-dict keys of the per-subject weights (first axis: subject) of ``model``.

    These are the spatial attention heads and the subject layers.
    """
    return [
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, SpatialAttention | SubjectLayer)
    ]


def load_pretrained(
    model: torch.nn.Module,
    path: str | os.PathLike,
    meta: dict[str, Any],
    *,
    keep: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Start ``model`` from a pretrained checkpoint's best weights (fine-tuning, ``init``).

    Every weight is copied except the per-subject ones (:func:`subject_parameters`), which are
    mapped by subject label: a subject of this run that the checkpoint was trained on keeps its
    own slot; a new subject starts from the mean of the checkpoint's subjects' slots (the
    average head is a better start for an unseen anatomy than a random one, and the rest of the
    network was trained against such heads). State-dict keys starting with a prefix in ``keep``
    stay as the new run built them (e.g. statistics measured on the new data).

    Parameters
    ----------
    model : nn.Module
        The new run's model, built for ``meta`` (its ``arch``, ``model_config``, ``channels``
        and ``subject_labels``).
    path : path
        The pretrained checkpoint (or its training output folder).
    meta : dict
        The new run's description.
    keep : tuple of str
        State-dict key prefixes not taken from the checkpoint.

    Returns
    -------
    summary : dict
        ``path``, ``sha256``, the pretrained ``subjects`` and, per new subject, where its slot
        came from (``subjects_from``: a pretrained label or ``"mean"``).

    Raises
    ------
    ValueError
        If the checkpoint holds another architecture, model config or channel set.
    """
    path = resolve_init(path)
    payload = load_checkpoint(path)
    saved = payload["meta"]
    _check_compatible(path, saved, meta)
    weights = payload.get("best_model") or payload["model"]
    old_labels = [str(s) for s in saved.get("subject_labels") or []]
    new_labels = [str(s) for s in meta.get("subject_labels") or []]
    per_subject = set(subject_parameters(model))
    state = model.state_dict()
    sources = {label: label if label in old_labels else "mean" for label in new_labels}
    for key, current in state.items():
        if key.startswith(keep) or key not in weights:
            continue
        value = weights[key]
        if key in per_subject:
            value = _map_subjects(value, old_labels, new_labels)
        if value.shape != current.shape:
            raise ValueError(
                f"Invalid value for 'init': '{path}' holds {key} of shape {tuple(value.shape)} "
                f"but this run's model needs {tuple(current.shape)}. Pretrain with the same "
                "architecture, config and channels, or train without init."
            )
        state[key] = value.to(current.dtype)
    model.load_state_dict(state)
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "subjects": old_labels,
        "subjects_from": sources,
    }


def _map_subjects(value: torch.Tensor, old: list[str], new: list[str]) -> torch.Tensor:
    """Per-subject weights ``(n_old, ...)`` -> ``(n_new, ...)``: same label, else the mean."""
    mean = value.mean(dim=0)
    rows = [value[old.index(label)] if label in old else mean for label in new]
    return torch.stack(rows).clone()


def _check_compatible(path: Path, saved: dict[str, Any], meta: dict[str, Any]) -> None:
    """Refuse a pretrained checkpoint of another architecture, config or channel set."""
    fix = "Pretrain on the same channels with the same architecture and config, or drop init."
    if saved.get("arch") != meta.get("arch"):
        raise ValueError(
            f"Invalid value for 'init': '{path}' holds a {saved.get('arch')!r} model but this run "
            f"trains {meta.get('arch')!r}. {fix}"
        )
    if saved.get("model_config") != meta.get("model_config"):
        differ = sorted(
            key
            for key in {**saved.get("model_config", {}), **meta.get("model_config", {})}
            if saved.get("model_config", {}).get(key) != meta.get("model_config", {}).get(key)
        )
        raise ValueError(
            f"Invalid value for 'init': '{path}' was trained with another model config "
            f"({saved.get('config_name', 'custom')!r}; differs in {', '.join(differ)}) than this "
            f"run ({meta.get('config_name', 'custom')!r}). {fix}"
        )
    old, new = saved.get("channels", {}), meta.get("channels", {})
    if old.get("names") != new.get("names") or old.get("types") != new.get("types"):
        raise ValueError(
            f"Invalid value for 'init': '{path}' was trained on {len(old.get('names', []))} "
            f"channels ({_types(old)}) but these recordings have {len(new.get('names', []))} "
            f"({_types(new)}), or other channel names. {fix}"
        )


def _types(channels: dict[str, Any]) -> str:
    """The channel types of a description, joined by '/' (e.g. 'mag/grad')."""
    types = list(dict.fromkeys(channels.get("types", [])))
    return "/".join(types) or "no types"
