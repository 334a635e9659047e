"""Torch views of a :class:`~models.typing.data.TypingDataset`: sentences as padded batches.

- :class:`KeystrokeSentences` + :func:`collate_keystrokes` (v1): one item per sentence,
  batched to ``x (B, K, C, T)`` with ``key_mask (B, K)`` and ``targets (B, K)`` (padding
  :data:`IGNORE_INDEX`, which ``cross_entropy`` skips).
- :class:`ContinuousSentences` + :func:`collate_continuous` (v2): each sentence's span of
  continuous preprocessed data, batched to ``x (B, C, L)`` with ``lengths``, and its key classes
  as CTC targets with ``target_lengths``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from models.typing.data import TypingDataset

#: Target value of padded keystrokes (``torch.nn.functional.cross_entropy``'s default ignore).
IGNORE_INDEX = -100
#: Shortest run of keystrokes a training crop keeps.
MIN_CROP_KEYS = 4


class KeystrokeSentences(Dataset):
    """Sentences of keystroke windows: item ``i`` is ``(windows, targets, subject)``.

    Parameters
    ----------
    dataset : TypingDataset
    indices : sequence of int
        Sentence indices (a split).
    crop : float
        Training augmentation: probability that an item is a random run of consecutive keystrokes
        of its sentence (at least :data:`MIN_CROP_KEYS`) instead of the whole sentence. Live
        decoding runs the transformer on the keystrokes typed so far, and with calibration data
        of a few dozen sentences whole sentences alone let it memorise them. Drawn from torch's
        global generator (seeded per epoch by training).
    """

    def __init__(self, dataset: TypingDataset, indices: Sequence[int], crop: float = 0.0) -> None:
        if not 0.0 <= crop <= 1.0:
            raise ValueError(f"Invalid value for 'crop': {crop!r}; use a probability in [0, 1].")
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.crop = crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[Tensor, Tensor, int]:
        sentence = self.dataset.sentences[self.indices[item]]
        start, stop = 0, sentence.n_keys
        if self.crop and stop > MIN_CROP_KEYS and float(torch.rand(())) < self.crop:
            length = int(torch.randint(MIN_CROP_KEYS, stop + 1, ()))
            start = int(torch.randint(0, stop - length + 1, ()))
            stop = start + length
        return (
            torch.from_numpy(sentence.windows[start:stop]),
            torch.from_numpy(sentence.targets[start:stop]),
            sentence.subject,
        )


def collate_keystrokes(items: Sequence[tuple[Tensor, Tensor, int]]) -> dict[str, Tensor]:
    """Pad sentences to the longest: ``x (B, K, C, T)``, ``targets``, ``key_mask``, ``subject``."""
    n_keys = max(windows.shape[0] for windows, _, _ in items)
    shape = items[0][0].shape[1:]
    x = torch.zeros(len(items), n_keys, *shape, dtype=torch.float32)
    targets = torch.full((len(items), n_keys), IGNORE_INDEX, dtype=torch.long)
    for b, (windows, labels, _) in enumerate(items):
        x[b, : len(windows)] = windows
        targets[b, : len(labels)] = labels
    return {
        "x": x,
        "targets": targets,
        "key_mask": targets != IGNORE_INDEX,
        "subject": torch.tensor([s for _, _, s in items], dtype=torch.long),
    }


class ContinuousSentences(Dataset):
    """Sentences as continuous data: item ``i`` is ``(data (C, L), targets, subject)``.

    Only sentences whose span is all valid samples are kept (:attr:`n_skipped` counts the
    others). The dataset must hold continuous data (``build_typing_dataset(continuous=True)``).
    """

    def __init__(self, dataset: TypingDataset, indices: Sequence[int]) -> None:
        if any(data is None for data in dataset.continuous):
            raise ValueError(
                "Invalid value for 'dataset': it holds no continuous data, which the CTC decoder "
                "trains on. Build it with build_typing_dataset(..., continuous=True)."
            )
        self.dataset = dataset
        valid = [int(i) for i in indices if dataset.sentences[int(i)].span_valid]
        self.n_skipped = len(indices) - len(valid)
        self.indices = valid

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[Tensor, Tensor, int]:
        sentence = self.dataset.sentences[self.indices[item]]
        start, stop = sentence.span
        data = self.dataset.continuous[sentence.recording][:, start:stop]
        return (
            torch.from_numpy(np.ascontiguousarray(data)),
            torch.from_numpy(sentence.targets),
            sentence.subject,
        )


def collate_continuous(items: Sequence[tuple[Tensor, Tensor, int]]) -> dict[str, Tensor]:
    """Pad spans at the end: ``x (B, C, L)``, ``lengths``, ``targets``, ``target_lengths``."""
    lengths = torch.tensor([data.shape[1] for data, _, _ in items], dtype=torch.long)
    target_lengths = torch.tensor([len(t) for _, t, _ in items], dtype=torch.long)
    x = torch.zeros(len(items), items[0][0].shape[0], int(lengths.max()), dtype=torch.float32)
    targets = torch.zeros(len(items), int(target_lengths.max()), dtype=torch.long)
    for b, (data, labels, _) in enumerate(items):
        x[b, :, : data.shape[1]] = data
        targets[b, : len(labels)] = labels
    return {
        "x": x,
        "lengths": lengths,
        "targets": targets,
        "target_lengths": target_lengths,
        "subject": torch.tensor([s for _, _, s in items], dtype=torch.long),
    }
