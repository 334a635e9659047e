"""Losses, predictions and evaluation of the typing decoders, shared by training and the report.

v1 is trained with cross-entropy on both heads (conv only, per keystroke; transformer, per
sentence) and judged by the transformer's argmax CER; v2 with CTC on each sentence's span of
continuous data and judged by greedy CTC decoding. CER is computed per sentence
(:func:`bci_app.typing.alphabet.cer`) and averaged over sentences, as in Brain2Qwerty.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bci_app.lm.beam import ctc_greedy_decode
from bci_app.typing.alphabet import cer, classes_to_text
from models.typing.config import BLANK_INDEX


class LossModule(nn.Module):
    """Wraps a decoder so that ``forward(batch)`` returns ``(loss, outputs)`` (what DDP wraps)."""

    def __init__(self, model: nn.Module, arch: str) -> None:
        super().__init__()
        self.model, self.arch = model, arch

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of one collated batch and the outputs (detached) needed to score it."""
        if self.arch == "brain2qwerty_v1":
            conv, sentence = self.model.forward_all(batch["x"], batch["subject"], batch["key_mask"])
            targets = batch["targets"]
            loss = F.cross_entropy(conv.float().flatten(0, 1), targets.flatten()) + F.cross_entropy(
                sentence.float().flatten(0, 1), targets.flatten()
            )
            return loss, {"conv": conv.detach(), "sentence": sentence.detach()}
        log_probs = self.model(batch["x"], batch["subject"], batch["lengths"]).float()
        frames = self.model.output_lengths(batch["lengths"])
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),
            batch["targets"],
            frames,
            batch["target_lengths"],
            blank=BLANK_INDEX,
            zero_infinity=True,
        )
        return loss, {"log_probs": log_probs.detach(), "frames": frames}


def batch_texts(batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> list[dict[str, str]]:
    """Target and predicted texts of every sentence of a batch (``conv`` too for v1)."""
    rows = []
    if "sentence" in outputs:
        mask = batch["key_mask"].cpu()
        targets = batch["targets"].cpu()
        conv = outputs["conv"].argmax(-1).cpu()
        sentence = outputs["sentence"].argmax(-1).cpu()
        for b in range(len(targets)):
            valid = mask[b]
            rows.append(
                {
                    "target": classes_to_text(targets[b][valid].numpy()),
                    "prediction": classes_to_text(sentence[b][valid].numpy()),
                    "prediction_conv": classes_to_text(conv[b][valid].numpy()),
                }
            )
        return rows
    log_probs = outputs["log_probs"].cpu().numpy()
    frames = outputs["frames"].cpu().numpy()
    for b in range(len(log_probs)):
        n_target = int(batch["target_lengths"][b])
        target = batch["targets"][b, :n_target].cpu().numpy()
        rows.append(
            {
                "target": classes_to_text(target),
                "prediction": ctc_greedy_decode(log_probs[b, : frames[b]], blank=BLANK_INDEX),
            }
        )
    return rows


def score_rows(rows: list[dict[str, str]]) -> list[dict[str, str | float]]:
    """Add ``cer`` (and ``cer_conv`` when there is a conv-only prediction) to each row."""
    for row in rows:
        row["cer"] = cer(row["prediction"], row["target"])
        if "prediction_conv" in row:
            row["cer_conv"] = cer(row["prediction_conv"], row["target"])
    return rows


def key_pairs(batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> tuple[np.ndarray, ...]:
    """v1: per-keystroke ``(targets, transformer argmax, conv argmax)`` of the real keystrokes."""
    mask = batch["key_mask"].cpu()
    return (
        batch["targets"].cpu()[mask].numpy(),
        outputs["sentence"].argmax(-1).cpu()[mask].numpy(),
        outputs["conv"].argmax(-1).cpu()[mask].numpy(),
    )


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    module: LossModule, loader: Iterable[dict[str, Tensor]], device: torch.device, autocast
) -> dict:
    """Loss and CER of a split, in eval mode (the module's mode is restored).

    Returns ``loss`` (mean over batches), ``cer`` (mean over sentences; v1: transformer),
    ``cer_conv`` (v1), ``sentences`` (one row per sentence: typed text, prediction(s), CER)
    and, for v1, ``keys`` (targets, transformer and conv predictions per keystroke).
    """
    was_training = module.training
    module.eval()
    losses, rows, pairs = [], [], []
    try:
        for batch in loader:
            batch = to_device(batch, device)
            with autocast():
                loss, outputs = module(batch)
            losses.append(float(loss))
            rows += batch_texts(batch, outputs)
            if "sentence" in outputs:
                pairs.append(key_pairs(batch, outputs))
    finally:
        module.train(was_training)
    score_rows(rows)
    result = {
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "cer": float(np.mean([r["cer"] for r in rows])) if rows else float("nan"),
        "n_sentences": len(rows),
        "sentences": rows,
    }
    if pairs:
        result["cer_conv"] = float(np.mean([r["cer_conv"] for r in rows]))
        result["keys"] = tuple(np.concatenate(p) for p in zip(*pairs))
    return result
