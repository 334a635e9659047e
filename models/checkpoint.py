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
