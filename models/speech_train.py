"""Train the speech decoder on listening recordings and write its bundle, checkpoint and report.

:func:`train_speech` builds the dataset (:func:`models.speech_data.build_speech_dataset`), splits
it by sentence, trains the CLIP objective with AdamW and a one-cycle schedule on the training
split's word windows plus its 0.5 s-hop windows, and after every epoch scores retrieval on the
validation word windows (top-1/top-10 of each window's own audio segment among all validation
segments). It stops early when validation top-10 stops improving, writes a checkpoint per epoch
(``OUT/checkpoints/``, :mod:`models.checkpoint`, resumable with ``resume``), then scores the
best epoch on the test split and writes the bundle, ``checkpoint.pt`` and ``report/``
(:mod:`models.speech_bundle`).

Multi-process training follows the typing decoder's machinery (:mod:`models.distributed`):
``torchrun --nproc_per_node=N -m models.speech_train REC... --out OUT`` gives each process a
share of the training windows (``DistributedSampler``); rank 0 validates and writes.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from bci_app.speech.decoder import retrieval_ranks
from bci_app.speech.extractors import features_from_manifest, make_features
from models import distributed
from models.checkpoint import (
    epoch_path,
    load_checkpoint,
    prune_epochs,
    resolve_resume,
    save_checkpoint,
)
from models.registry import build_model, get_config
from models.speech import SpeechClip, with_spatial_dims
from models.speech_data import SpeechDataset, build_speech_dataset
from models.train_setup import autocast_factory, seed_everything

logger = logging.getLogger("models.speech_train")
ARCH = "speech_clip"
DEFAULTS: dict[str, Any] = {
    "config": "small",
    "epochs": 30,
    "batch_size": 32,
    "lr": 2e-3,
    "weight_decay": 0.05,
    "patience": 8,
    "seed": 0,
    "picks": None,
    "audio_layers": None,
}


class _Windows(Dataset):
    """Torch view of some windows of a :class:`SpeechDataset`."""

    def __init__(self, data: SpeechDataset, index: np.ndarray) -> None:
        self.data, self.index = data, np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = self.index[i]
        return {
            "x": torch.from_numpy(self.data.brain[j]),
            "subject": torch.tensor(int(self.data.subject[j])),
            "mel": torch.from_numpy(self.data.mel[j]),
        }


class _Loss(torch.nn.Module):
    """``forward(batch) -> loss`` around the model (what DDP wraps)."""

    def __init__(self, model: SpeechClip) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch["x"], batch["subject"], batch["mel"])[0]


def resolve_settings(given: dict[str, Any], saved: dict[str, Any] | None) -> dict[str, Any]:
    """Fill settings from the resumed checkpoint or :data:`DEFAULTS`; refuse conflicts."""
    given = {k: given.get(k) for k in DEFAULTS}
    if saved is not None:
        conflicts = {k: (v, saved[k]) for k, v in given.items() if v is not None and v != saved[k]}
        if conflicts:
            shown = ", ".join(f"{k}={a!r} (checkpoint: {b!r})" for k, (a, b) in conflicts.items())
            raise ValueError(
                f"Invalid arguments with 'resume': {shown} differ from the checkpoint. Leave "
                "them out to continue that training, or train anew without resume."
            )
        return dict(saved)
    args = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    for key in ("epochs", "batch_size", "patience"):
        if isinstance(args[key], bool) or not isinstance(args[key], int) or args[key] < 1:
            raise ValueError(f"Invalid value for '{key}': {args[key]!r}; use an integer >= 1.")
    if not (isinstance(args["lr"], int | float) and 0 < args["lr"] < 1):
        raise ValueError(f"Invalid value for 'lr': {args['lr']!r}; use a number in (0, 1).")
    get_config(ARCH, args["config"])
    return args


@torch.no_grad()
def embed_windows(
    model: SpeechClip, data: SpeechDataset, index: np.ndarray, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Brain and audio embeddings of windows ``index`` in eval mode (mode restored)."""
    was = model.training
    model.eval()
    brain, audio = [], []
    try:
        for first in range(0, len(index), 64):
            part = index[first : first + 64]
            x = torch.from_numpy(data.brain[part]).to(device)
            subject = torch.from_numpy(data.subject[part].astype(np.int64)).to(device)
            brain.append(model(x, subject).float().cpu().numpy())
            audio.append(model.audio(torch.from_numpy(data.mel[part]).to(device)).float().cpu())
    finally:
        model.train(was)
    dim = model.config.embed_dim
    cat = lambda xs: np.concatenate([np.asarray(x) for x in xs]) if xs else np.zeros((0, dim))  # noqa: E731
    return cat(brain), cat(audio)


def score(model: SpeechClip, data: SpeechDataset, index: np.ndarray, device) -> dict[str, Any]:
    """Retrieval of each word window's own segment among the split's: ranks, top-1/10, loss."""
    brain, audio = embed_windows(model, data, index, device)
    ranks = retrieval_ranks(brain, audio)
    scale = float(model.logit_scale.detach().clamp(max=np.log(100.0)).exp())
    sims = (
        scale
        * (brain / np.linalg.norm(brain, axis=1, keepdims=True))
        @ (audio / np.linalg.norm(audio, axis=1, keepdims=True)).T
    )
    sims -= sims.max(axis=1, keepdims=True)
    loss = float(np.mean(np.log(np.exp(sims).sum(axis=1)) - np.diag(sims))) if len(index) else 0.0
    n = len(index)
    return {
        "loss": loss,
        "top1": float(np.mean(ranks < 1)) if n else 0.0,
        "top10": float(np.mean(ranks < 10)) if n else 0.0,
        "n_candidates": n,
        "ranks": ranks,
        "words": [data.words[i] for i in index],
    }


def train_speech(
    recordings: Sequence[Any],
    out_bundle: str | Path,
    *,
    audio_dirs: Sequence[Any] | None = None,
    config: str | dict | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    patience: int | None = None,
    seed: int | None = None,
    resume: str | Path | None = None,
    device: str = "auto",
    subject_ids: Sequence[Any] | None = None,
    picks: Sequence[str] | None = None,
    name: str | None = None,
    audio_model: str | Path | None = None,
    audio_layers: Sequence[int] | None = None,
    export: bool = True,
    progress: bool = True,
    keep_checkpoints: int = 3,
) -> dict[str, Any]:
    """Train a speech decoder on listening ``recordings``; write the bundle to ``out_bundle``.

    Settings left as None take :data:`DEFAULTS` (or the resumed checkpoint's). ``audio_dirs``:
    one stimulus folder per recording (:mod:`bci_app.speech.heard`). ``audio_model``: a local
    wav2vec2-family checkpoint folder whose hidden states (``audio_layers``, default the last 4,
    averaged) replace the log-mel features (:mod:`bci_app.speech.pretrained`). Returns the metrics
    (validation/test top-1 and top-10 with N and chance, epochs, paths).
    """
    given = dict(
        config=config,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        seed=seed,
        picks=picks,
        audio_layers=list(audio_layers) if audio_layers else None,
    )
    ctx = distributed.setup(device)
    out = Path(out_bundle)
    started = time.perf_counter()
    checkpoint = load_checkpoint(resolve_resume(resume)) if resume else None
    args = resolve_settings(given, checkpoint["meta"]["train"] if checkpoint else None)
    seed_everything(args["seed"])
    base = get_config(ARCH, args["config"])
    if checkpoint is not None:  # the extractor it was trained with (checked by fingerprint)
        features = features_from_manifest(checkpoint["meta"], audio_model, device=str(ctx.device))
    else:
        features = make_features(
            base.sfreq, base.n_mels, audio_model, args["audio_layers"], device=str(ctx.device)
        )
    base = dataclasses.replace(base, n_mels=features.n_features)
    data = build_speech_dataset(
        recordings,
        base,
        audio_dirs=audio_dirs,
        subject_ids=subject_ids,
        picks=args["picks"],
        features=features,
    )
    model_config = with_spatial_dims(base, list(data.channels.types))
    split = data.split(seed=args["seed"])
    from models.speech_bundle import describe

    meta = describe(data, split, args, model_config, out, name, ctx.world_size)
    model = build_model(ARCH, model_config, data.n_chans, data.channels.positions, data.n_subjects)
    model = model.to(ctx.device)
    train_index = np.concatenate([split["train"]["train"], split["train"]["word"]])
    model.audio.set_statistics(data.mel[train_index])
    run = _Run(ctx, args, meta, model, data, split, train_index)
    if checkpoint is not None:
        run.restore(checkpoint)
    run.fit(out, progress and ctx.is_main, keep_checkpoints)
    metrics = None
    if ctx.is_main:
        from models.speech_bundle import write_outputs

        metrics = write_outputs(run, out, started, export)
    metrics = distributed.broadcast(ctx, metrics)
    distributed.cleanup(ctx)
    return metrics


class _Run:
    """Model, optimiser, schedule, loaders and history of one speech training run."""

    def __init__(self, ctx, args, meta, model, data, split, train_index) -> None:
        self.ctx, self.args, self.meta, self.model = ctx, args, meta, model
        self.data, self.split = data, split
        self.module = _Loss(model)
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.module = torch.nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        windows = _Windows(data, train_index)
        batch = max(2, min(args["batch_size"], len(windows) // ctx.world_size))
        self.sampler = DistributedSampler(
            windows, ctx.world_size, ctx.rank, shuffle=True, seed=args["seed"], drop_last=True
        )
        self.loader = DataLoader(windows, batch, sampler=self.sampler, drop_last=True)
        if len(self.loader) == 0:
            raise ValueError(
                f"Too little data: {len(windows)} training windows make no batch of {batch}. "
                "Record a longer listening session."
            )
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=args["lr"], weight_decay=args["weight_decay"]
        )
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=args["lr"],
            total_steps=args["epochs"] * len(self.loader),
            pct_start=0.2,
        )
        self.autocast, _ = autocast_factory(ctx.device)
        self.epoch, self.history = 0, {}
        self.best = {"epoch": 0, "top10": -1.0, "loss": float("inf"), "bad_epochs": 0}
        self.best_state = copy.deepcopy(model.state_dict())

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint."""
        self.model.load_state_dict(checkpoint["model"])
        self.best_state = checkpoint["best_model"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.epoch, self.history = int(checkpoint["epoch"]), dict(checkpoint["history"])
        self.best = dict(checkpoint["best"])

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds besides the description."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "best_model": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "best": self.best,
        }

    def fit(self, out: Path, show: bool, keep: int) -> None:
        """Train until the last epoch or until validation top-10 stops improving."""
        bar = tqdm(
            range(self.epoch, self.args["epochs"]),
            desc="training",
            unit="epoch",
            initial=self.epoch,
            total=self.args["epochs"],
            disable=not show,
        )
        for epoch in bar:
            if self.best["bad_epochs"] >= self.args["patience"]:
                break
            entry = self.run_epoch(epoch, show)
            bar.set_postfix(
                loss=f"{entry['train_loss']:.3f}", val_top10=f"{entry['val_top10']:.3f}"
            )
            if self.ctx.is_main:
                save_checkpoint(epoch_path(out, self.epoch), self.state(), self.meta)
                prune_epochs(out, keep)

    def run_epoch(self, epoch: int, show: bool) -> dict[str, float]:
        """One pass over this rank's training windows, then validation (rank 0)."""
        torch.manual_seed(self.args["seed"] * 1_000_003 + epoch * 1_009 + self.ctx.rank)
        self.sampler.set_epoch(epoch)
        self.module.train()
        total, n = 0.0, 0
        for batch in tqdm(self.loader, desc=f"epoch {epoch + 1}", leave=False, disable=not show):
            batch = {k: v.to(self.ctx.device) for k, v in batch.items()}
            with self.autocast():
                loss = self.module(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            total, n = total + float(loss.detach()), n + 1
        total, n = distributed.sum_scalars(self.ctx, total, n)
        val = None
        if self.ctx.is_main:
            result = score(self.model, self.data, self.split["val"]["word"], self.ctx.device)
            val = {k: result[k] for k in ("loss", "top1", "top10")}
        val = distributed.broadcast(self.ctx, val)
        entry = {"train_loss": total / max(n, 1), "val_loss": val["loss"]}
        entry.update(val_top1=val["top1"], val_top10=val["top10"])
        for key, value in entry.items():
            self.history.setdefault(key, []).append(value)
        self.epoch = epoch + 1
        if (val["top10"], -val["loss"]) > (self.best["top10"], -self.best["loss"]):
            self.best = {"epoch": self.epoch, "top10": val["top10"], "loss": val["loss"]}
            self.best["bad_epochs"] = 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.best["bad_epochs"] += 1
        if self.ctx.is_main:
            logger.info(
                "epoch %d: train loss %.3f, val loss %.3f, val top-10 %.3f (best %.3f at %d)",
                self.epoch,
                entry["train_loss"],
                val["loss"],
                val["top10"],
                self.best["top10"],
                self.best["epoch"],
            )
        return entry


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.speech_train`` (and ``torchrun ... -m models.speech_train``)."""
    import argparse

    from bci_app.cli.speech import add_speech_train_arguments, run_speech_train

    parser = argparse.ArgumentParser(prog="python -m models.speech_train")
    add_speech_train_arguments(parser)
    args = parser.parse_args(argv)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING)
    try:
        return run_speech_train(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"python -m models.speech_train: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
