"""Settings of a training run: one resolver for every task, seeding, mixed precision, provenance.

A task (:class:`models.training.task.TrainingTask`) lists its settings and their defaults
(``defaults``); :func:`resolve_settings` fills the ones the caller left as None from a resumed
checkpoint or those defaults, refuses settings that differ from the checkpoint being resumed,
and checks them all (the task's own checks first). The resolved settings are saved in every
checkpoint's description (``meta["train"]``), which is how a resumed run finds them again.
"""

from __future__ import annotations

import contextlib
import functools
import random
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import bci_app
from models.checkpoint import resolve_init
from models.registry import get_config

if TYPE_CHECKING:
    from models.training.task import TrainingTask

_POSITIVE_INTS = ("epochs", "batch_size", "patience")
#: Settings every task takes besides its own ``defaults``. ``init``: a pretrained checkpoint
#: (or its training folder) to fine-tune from (:func:`models.checkpoint.load_pretrained`).
COMMON_DEFAULTS: dict[str, Any] = {"init": None}


def resolve_settings(
    task: TrainingTask, given: Mapping[str, Any], saved: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Fill unset settings from the resumed checkpoint (``saved``) or the task's defaults.

    Parameters
    ----------
    task : TrainingTask
        Gives the settings, their defaults and its own checks.
    given : mapping
        The caller's settings; None means "not given".
    saved : mapping | None
        The settings of the checkpoint being resumed (its ``meta["train"]``), or None.

    Returns
    -------
    settings : dict
        One value per key of ``task.defaults`` and :data:`COMMON_DEFAULTS`, checked.

    Raises
    ------
    ValueError
        If a setting is invalid, or differs from the checkpoint being resumed.
    """
    defaults = {**COMMON_DEFAULTS, **task.defaults}
    given = {key: given.get(key) for key in defaults}
    if isinstance(given.get("picks"), str):
        given["picks"] = [given["picks"]]
    elif given.get("picks") is not None:
        given["picks"] = list(given["picks"])
    if isinstance(given.get("init"), Path):  # settings are saved as JSON
        given["init"] = str(given["init"])
    if saved is None:
        settings = {key: defaults[key] if value is None else value for key, value in given.items()}
    else:
        previous = {key: saved.get(key, defaults[key]) for key in defaults}
        conflicts = {
            key: (value, previous[key])
            for key, value in given.items()
            if value is not None and value != previous[key]
        }
        if conflicts:
            shown = ", ".join(f"{k}={a!r} (checkpoint: {b!r})" for k, (a, b) in conflicts.items())
            raise ValueError(
                f"Invalid arguments with 'resume': {shown} differ from the checkpoint being "
                "resumed. Leave them out to continue that training, or train anew without resume."
            )
        settings = previous
    task.check_settings(settings)
    check_common_settings(settings)
    get_config(task.architecture(settings), settings["config"])
    return settings


def check_common_settings(settings: Mapping[str, Any]) -> None:
    """Check the settings every task has: epochs, batch size, patience, seed, lr, decay, init."""
    for key in _POSITIVE_INTS:
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid value for '{key}': {value!r}; use an integer >= 1.")
    seed = settings["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid value for 'seed': {seed!r}; use an integer >= 0.")
    lr = settings["lr"]
    if isinstance(lr, bool) or not (isinstance(lr, int | float) and 0 < lr < 1):
        raise ValueError(f"Invalid value for 'lr': {lr!r}; use a number in (0, 1).")
    decay = settings["weight_decay"]
    if isinstance(decay, bool) or not (isinstance(decay, int | float) and decay >= 0):
        raise ValueError(f"Invalid value for 'weight_decay': {decay!r}; use a number >= 0.")
    init = settings.get("init")
    if init is not None:
        if not isinstance(init, str | Path):
            raise ValueError(
                f"Invalid value for 'init': {init!r}; give the path of a pretrained checkpoint."
            )
        resolve_init(init)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CUDA included)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds libraries that draw from the legacy global
    torch.manual_seed(seed)


#: Mixed-precision choices of a training run (:class:`Acceleration`).
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class Acceleration:
    """How a training run uses its device; none of it changes what the model is.

    Attributes
    ----------
    precision : "auto" | "bf16" | "fp16" | "fp32"
        Autocast dtype. ``auto``: bfloat16 on a CUDA device that supports it, else float16 on
        CUDA (with a gradient scaler), none on the CPU. ``bf16`` also runs on the CPU (CPU
        autocast); ``fp16`` needs CUDA.
    compile : bool
        Run the training step through ``torch.compile`` (``compile_mode``).
    compile_mode : str | None
        ``torch.compile`` mode (None: its default).
    pin_memory : bool | None
        Page-locked host batches, copied to the GPU asynchronously (None: on CUDA only).
    """

    precision: str = "auto"
    compile: bool = False
    compile_mode: str | None = None
    pin_memory: bool | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Invalid value for 'precision': {self.precision!r}; use one of {PRECISIONS}."
            )


def autocast_factory(
    device: torch.device, precision: str = "auto"
) -> tuple[Callable[[], Any], torch.dtype | None]:
    """Return a context-manager factory for mixed precision and its dtype (None: float32)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext, None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            "Invalid value for 'precision': 'fp16' autocast needs a CUDA device; use 'bf16' "
            "or 'fp32' on the CPU."
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"Invalid value for 'precision': this GPU ({torch.cuda.get_device_name(device)}) "
            "has no bfloat16; use 'fp16' or 'auto'."
        )
    if precision == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device.type, dtype=dtype), dtype


def git_commit() -> str | None:
    """The commit of the source tree bci-app runs from, if it is a git checkout."""
    root = Path(__file__).resolve().parents[2]
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


def config_name(config: str | Mapping[str, Any]) -> str:
    """The preset a ``config`` setting names, or ``"custom"`` for a dict."""
    return config if isinstance(config, str) else "custom"


def provenance(
    settings: Mapping[str, Any], recordings: list[dict[str, Any]], world_size: int
) -> dict[str, Any]:
    """Where a decoder comes from: time, versions, recordings, seed, preset, commit, processes."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bci_app_version": bci_app.__version__,
        "torch_version": torch.__version__,
        "recordings": recordings,
        "seed": settings["seed"],
        "config": config_name(settings["config"]),
        "git_commit": git_commit(),
        "world_size": world_size,
    }
