"""Settings of a training run: defaults, checks, resume rules, seeding and the run's description.

The description (:func:`describe`) is the JSON saved in every checkpoint: what the decoder reads
(channels, rate, preprocessing with its scaler, window), how it was built (architecture, config,
training settings) and from what (recordings, their sha256 or simulator parameters, the dataset's
fingerprint). The bundle's manifest is made from it (:mod:`models.bundle_export`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import random
import subprocess
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bci_app
from models.data import WINDOW, TypingDataset
from models.registry import get_config

#: ``--arch`` values and the registered models they name.
ARCHS = {"v1": "brain2qwerty_v1", "v2": "brain2qwerty_v2"}
#: Training settings used when neither the caller nor a resumed checkpoint gives them.
DEFAULTS: dict[str, Any] = {
    "config": "small",
    "arch": "v1",
    "epochs": 40,
    "batch_size": 4,
    "lr": 2e-3,
    "weight_decay": 0.05,
    "patience": 10,
    "seed": 0,
    "picks": None,
    "crop": 0.5,
}
_POSITIVE_INTS = ("epochs", "batch_size", "patience")


def resolve_arguments(given: Mapping[str, Any], saved: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill unset settings from the resumed checkpoint (``saved``) or :data:`DEFAULTS`; check them.

    Raises
    ------
    ValueError
        If a setting is invalid, or differs from the checkpoint being resumed.
    """
    given = {k: given.get(k) for k in DEFAULTS}
    if given["picks"] is not None:
        picks = given["picks"]
        given["picks"] = [picks] if isinstance(picks, str) else list(picks)
    if saved is None:
        args = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    else:
        previous = saved["train"]
        conflicts = {k: (v, previous[k]) for k, v in given.items() if v is not None}
        conflicts = {k: pair for k, pair in conflicts.items() if pair[0] != pair[1]}
        if conflicts:
            shown = ", ".join(f"{k}={a!r} (checkpoint: {b!r})" for k, (a, b) in conflicts.items())
            raise ValueError(
                f"Invalid arguments with 'resume': {shown} differ from the checkpoint being "
                "resumed. Leave them out to continue that training, or train anew without resume."
            )
        args = dict(previous)
    _check(args)
    return args


def _check(args: dict[str, Any]) -> None:
    if args["arch"] not in ARCHS:
        raise ValueError(f"Invalid value for 'arch': {args['arch']!r}. Use one of {list(ARCHS)}.")
    for key in _POSITIVE_INTS:
        value = args[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid value for '{key}': {value!r}; use an integer >= 1.")
    seed = args["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid value for 'seed': {seed!r}; use an integer >= 0.")
    if not (isinstance(args["lr"], int | float) and 0 < args["lr"] < 1):
        raise ValueError(f"Invalid value for 'lr': {args['lr']!r}; use a number in (0, 1).")
    if not (isinstance(args["weight_decay"], int | float) and args["weight_decay"] >= 0):
        raise ValueError(
            f"Invalid value for 'weight_decay': {args['weight_decay']!r}; use a number >= 0."
        )
    if not (isinstance(args["crop"], int | float) and 0 <= args["crop"] <= 1):
        raise ValueError(
            f"Invalid value for 'crop': {args['crop']!r}; use a probability in [0, 1]."
        )
    get_config(ARCHS[args["arch"]], args["config"])


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CUDA included)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds libraries that draw from the legacy global
    torch.manual_seed(seed)


def autocast_factory(device: torch.device) -> tuple[Callable[[], Any], torch.dtype | None]:
    """Return a context-manager factory for mixed precision (CUDA only) and its dtype."""
    if device.type != "cuda":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return functools.partial(torch.autocast, "cuda", dtype=dtype), dtype


def fingerprint(dataset: TypingDataset) -> str:
    """SHA-256 of the dataset's sentences (prompts, classes, windows): resume checks it."""
    digest = hashlib.sha256()
    for sentence in dataset.sentences:
        digest.update(sentence.prompt.encode())
        digest.update(sentence.targets.tobytes())
        digest.update(np.ascontiguousarray(sentence.windows).tobytes())
    return digest.hexdigest()


def git_commit() -> str | None:
    """The commit of the source tree bci-app runs from, if it is a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def describe(
    dataset: TypingDataset,
    split: Mapping[str, np.ndarray],
    args: dict[str, Any],
    arch: str,
    out: Path,
    name: str | None,
    world_size: int,
) -> dict[str, Any]:
    """The JSON description of a run that every checkpoint carries (module docstring)."""
    preprocessing = dataset.preprocessing
    if arch == "brain2qwerty_v2":
        # v2 reads continuous data: the +-clamp that v1's windower applies is done by the
        # Preprocessor itself, live and in training (models.data clips the same way).
        preprocessing = dataclasses.replace(preprocessing, clamp=WINDOW["clamp"])
    sizes = {key: len(index) for key, index in split.items()}
    summary = (
        f"{len(dataset.sentences)} sentences, {dataset.n_keystrokes} keystrokes, "
        f"{dataset.n_chans} channels, {len(dataset.provenance)} recording(s)"
    )
    config = args["config"]
    return {
        "name": name or out.resolve().name,
        "arch": arch,
        "config_name": config if isinstance(config, str) else "custom",
        "model_config": get_config(arch, config).to_dict(),
        "n_chans": dataset.n_chans,
        "n_subjects": dataset.n_subjects,
        "subject_labels": [str(label) for label in dataset.subject_labels],
        "channels": dataset.channels.to_dict(),
        "sfreq_in": dataset.sfreq_in,
        "preprocessing": preprocessing.to_dict(),
        "window": dict(WINDOW),
        "train": args,
        "data": {
            "fingerprint": fingerprint(dataset),
            "summary": summary,
            "split": sizes,
            "subjects": [str(label) for label in dataset.subject_labels],
        },
        "dataset_stats": dataset.stats,
        "provenance": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "bci_app_version": bci_app.__version__,
            "torch_version": torch.__version__,
            "recordings": dataset.provenance,
            "seed": args["seed"],
            "config": config if isinstance(config, str) else "custom",
            "git_commit": git_commit(),
            "world_size": world_size,
        },
        "metrics": {},
    }
