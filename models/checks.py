"""Input checks every decoder's ``forward`` runs: channels, dtype and subject indices.

Each raises ``ValueError`` naming the argument, the rule, the bad value and the fix; the subject
range is not checked while exporting to ONNX (the graph would fix it).
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_subject(subject: Tensor, batch: int, n_subjects: int) -> None:
    """Raise ValueError unless ``subject`` is a ``(batch,)`` integer tensor of valid indices."""
    if subject.ndim != 1 or subject.shape[0] != batch or subject.dtype != torch.long:
        raise ValueError(
            f"Invalid value for 'subject': expected an int64 tensor of shape ({batch},), got "
            f"{subject.dtype} of shape {tuple(subject.shape)}. Pass one subject index per example."
        )
    # a compiled graph skips it too: reading the indices back would break the graph (and sync)
    if not (torch.compiler.is_exporting() or torch.compiler.is_compiling()) and subject.numel():
        low, high = int(subject.min()), int(subject.max())
        if low < 0 or high >= n_subjects:
            raise ValueError(
                f"Invalid value for 'subject': indices must be in [0, {n_subjects}), got "
                f"[{low}, {high}]. The model was built for n_subjects={n_subjects}."
            )


def check_continuous(x: Tensor, n_chans: int) -> None:
    """Raise ValueError unless ``x`` is ``(batch, n_chans, n_times)`` float32 continuous data."""
    if x.ndim != 3:
        raise ValueError(
            f"Invalid shape for 'x': expected (batch, n_chans, n_times), got {tuple(x.shape)}."
        )
    if x.shape[1] != n_chans:
        raise ValueError(
            f"n_chans={x.shape[1]} different from the decoder's n_chans={n_chans}. Pick the "
            "channels the decoder was trained on, in the same order."
        )
    check_float32(x)


def check_float32(x: Tensor) -> None:
    """Raise ValueError unless ``x`` is float32 (the models' and the ONNX graphs' dtype)."""
    if x.dtype != torch.float32:
        raise ValueError(f"Invalid dtype for 'x': expected float32, got {x.dtype}. Use x.float().")
