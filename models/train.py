"""Train a Brain2Qwerty typing decoder on calibration recordings and write its decoder bundle.

:func:`train_typing` builds the dataset (:func:`models.data.build_typing_dataset`), splits it by
sentence, trains with AdamW and a one-cycle schedule, stops early on the validation CER, writes
a checkpoint after every epoch (``OUT/checkpoints/epoch_NNNN.pt``, the newest few kept), then
evaluates the best epoch on the test split and writes, into ``OUT``:

- the decoder bundle (``manifest.json``, ONNX graphs, ``lm.npz``; :mod:`models.bundle_export`),
- ``checkpoint.pt``: the final checkpoint (best weights, metrics), which ``bci-app export`` reads,
- ``report/``: learning curves, confusion matrix and per-sentence CER (:mod:`models.report`).

The same code runs under ``torchrun --nproc_per_node=N -m models.train REC... --out OUT``
(:mod:`models.distributed`): each process trains on its share of the sentences
(``DistributedSampler``), gradients are averaged by DDP, and rank 0 evaluates, logs and writes.
Mixed precision (``torch.autocast``) is used on CUDA only: bfloat16 where supported, else float16
with a gradient scaler. Randomness (initialisation, split, order, dropout) follows ``seed``; the
randomness of epoch ``e`` on rank ``r`` is reseeded from ``(seed, e, r)``, so a resumed run
repeats what the uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from models import distributed
from models.checkpoint import (
    discard_epochs_after,
    epoch_path,
    load_checkpoint,
    prune_epochs,
    resolve_resume,
    save_checkpoint,
)
from models.data import build_typing_dataset
from models.datasets import (
    ContinuousSentences,
    KeystrokeSentences,
    collate_continuous,
    collate_keystrokes,
)
from models.registry import build_model
from models.steps import LossModule, batch_texts, evaluate, score_rows, to_device
from models.train_setup import (
    ARCHS,
    autocast_factory,
    describe,
    resolve_arguments,
    seed_everything,
)

logger = logging.getLogger("models.train")


def train_typing(
    recordings: Sequence[Any],
    out_bundle: str | Path,
    *,
    config: str | dict | None = None,
    arch: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    patience: int | None = None,
    seed: int | None = None,
    crop: float | None = None,
    resume: str | Path | None = None,
    device: str = "auto",
    subject_ids: Sequence[Any] | None = None,
    picks: Sequence[str] | None = None,
    name: str | None = None,
    export: bool = True,
    progress: bool = True,
    keep_checkpoints: int = 3,
) -> dict[str, Any]:
    """Train a typing decoder on ``recordings`` and write its bundle to ``out_bundle``.

    Parameters
    ----------
    recordings : sequence of path | Recording
        Calibration recordings with ``key:<c>`` (and ``sentence_start/end``) markers.
    out_bundle : path
        Output directory (bundle, ``checkpoint.pt``, ``checkpoints/``, ``report/``).
    config : str | dict | None
        Model preset (``"small"``, ``"paper"``) or a config dict; default ``"small"``.
    arch : {"v1", "v2"} | None
        Keystroke-locked v1 (default) or CTC v2.
    epochs, batch_size, lr, weight_decay, patience, seed, crop : optional
        Training settings (:data:`models.train_setup.DEFAULTS`); ``batch_size`` counts sentences
        per process, ``lr`` is the one-cycle peak, ``patience`` the epochs without a better
        validation CER before stopping, ``crop`` (v1) the probability that a training sentence
        is cut to a random run of its keystrokes (:class:`models.datasets.KeystrokeSentences`).
    resume : path | None
        Checkpoint (or output folder) to continue from. Settings left as None are taken from it;
        settings that differ from it are an error.
    device : {"auto", "cpu", "cuda", "cuda:N"}
    subject_ids : sequence | None
        One subject label per recording (default: one subject).
    picks : sequence of str | None
        Channel types or names to read (default: all EEG/MEG/iEEG channels).
    name : str | None
        Decoder name in the manifest (default: the output folder's name).
    export : bool
        Write the ONNX bundle (False: checkpoint and report only).
    progress : bool
        Show tqdm progress bars (rank 0 only).
    keep_checkpoints : int
        Per-epoch checkpoints kept.

    Returns
    -------
    metrics : dict
        Validation and test CER (``val_cer``, ``test_cer``; v1 also ``*_cer_conv``), dataset
        counts (``n_windows``, ``n_dropped_invalid``, ...), epochs run, the best epoch, the
        seconds it took and the paths written.
    """
    given = dict(
        config=config,
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        seed=seed,
        crop=crop,
        resume=resume,
        subject_ids=subject_ids,
        picks=picks,
        name=name,
        export=export,
        progress=progress,
        keep_checkpoints=keep_checkpoints,
    )
    ctx = distributed.setup(device)
    ok = False
    try:
        metrics = _train(ctx, recordings, Path(out_bundle), given)
        ok = True
        return metrics
    finally:
        if ok:
            distributed.cleanup(ctx)
        elif ctx.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(ctx, recordings, out: Path, given: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    checkpoint = load_checkpoint(resolve_resume(given["resume"])) if given["resume"] else None
    args = resolve_arguments(given, checkpoint["meta"] if checkpoint else None)
    seed_everything(args["seed"])
    arch = ARCHS[args["arch"]]
    dataset = build_typing_dataset(
        recordings,
        subject_ids=given["subject_ids"],
        picks=args["picks"],
        continuous=arch == "brain2qwerty_v2",
    )
    split = dataset.split(seed=args["seed"])
    meta = describe(dataset, split, args, arch, out, given["name"], ctx.world_size)
    if checkpoint is not None and checkpoint["meta"]["data"] != meta["data"]:
        raise ValueError(
            f"Invalid value for 'resume': the checkpoint was trained on other data "
            f"({checkpoint['meta']['data']['summary']}) than these recordings "
            f"({meta['data']['summary']}). Resume with the same recordings, or start anew."
        )
    model = build_model(
        arch, meta["model_config"], dataset.n_chans, dataset.channels.positions, dataset.n_subjects
    ).to(ctx.device)
    run = _Run(ctx, args, meta, model, dataset, split, given)
    if checkpoint is not None:
        run.restore(checkpoint)
    run.fit(out)
    return run.finish(out, started)


class _Run:
    """The moving parts of one training run: model, optimizer, schedule, loaders, history."""

    def __init__(self, ctx, args, meta, model, dataset, split, given) -> None:
        self.ctx, self.args, self.meta, self.given = ctx, args, meta, given
        self.model, self.dataset, self.split = model, dataset, split
        self.arch = meta["arch"]
        self.loss_module = LossModule(model, self.arch)
        self.module = self.loss_module
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.module = torch.nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=ids
            )
        views = (KeystrokeSentences, collate_keystrokes)
        if self.arch == "brain2qwerty_v2":
            views = (ContinuousSentences, collate_continuous)
        self.sets = {key: views[0](dataset, split[key]) for key in ("val", "test")}
        self.sets["train"] = views[0](dataset, split["train"])
        if self.arch == "brain2qwerty_v1":
            self.sets["train"] = KeystrokeSentences(dataset, split["train"], crop=args["crop"])
        _check_splits(self.sets)
        self.sampler = DistributedSampler(
            self.sets["train"], ctx.world_size, ctx.rank, shuffle=True, seed=args["seed"]
        )
        self.train_loader = DataLoader(
            self.sets["train"], args["batch_size"], sampler=self.sampler, collate_fn=views[1]
        )
        self.loaders = {
            key: DataLoader(self.sets[key], args["batch_size"], collate_fn=views[1])
            for key in ("val", "test")
        }
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=args["lr"], weight_decay=args["weight_decay"]
        )
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=args["lr"],
            total_steps=args["epochs"] * len(self.train_loader),
            pct_start=0.2,
        )
        self.autocast, amp_dtype = autocast_factory(ctx.device)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=ctx.device.type == "cuda" and amp_dtype == torch.float16
        )
        self.epoch, self.history = 0, {}
        self.best = {"epoch": 0, "cer": float("inf"), "loss": float("inf"), "bad_epochs": 0}
        self.best_state = copy.deepcopy(model.state_dict())

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, history, best so far."""
        self.model.load_state_dict(checkpoint["model"])
        self.best_state = checkpoint["best_model"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.history = int(checkpoint["epoch"]), dict(checkpoint["history"])
        self.best = dict(checkpoint["best"])
        if self.ctx.is_main:
            logger.info("Resuming after epoch %d of %d.", self.epoch, self.args["epochs"])

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds besides the description."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "best_model": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "best": self.best,
        }

    def fit(self, out: Path) -> None:
        """Train until the last epoch or until the validation CER stops improving."""
        show = self.given["progress"] and self.ctx.is_main
        if self.ctx.is_main and (stale := discard_epochs_after(out, self.epoch)):
            logger.warning("Removed %d checkpoints of an earlier run from %s.", stale, out)
        bar = tqdm(
            range(self.epoch, self.args["epochs"]),
            desc="training",
            unit="epoch",
            initial=self.epoch,
            total=self.args["epochs"],
            disable=not show,
            dynamic_ncols=True,
        )
        with logging_redirect_tqdm() if show else contextlib.nullcontext():
            for epoch in bar:
                if self.best["bad_epochs"] >= self.args["patience"]:
                    break
                entry = self.run_epoch(epoch, show, out)
                bar.set_postfix(
                    loss=f"{entry['train_loss']:.3f}", val_cer=f"{entry['val_cer']:.3f}"
                )

    def run_epoch(self, epoch: int, show: bool, out: Path) -> dict[str, Any]:
        """Train one epoch, validate, track the best weights, write the epoch's checkpoint."""
        started = time.perf_counter()
        train = self.train_epoch(epoch, show)
        entry = distributed.broadcast(self.ctx, self.validate() if self.ctx.is_main else None)
        entry.update(train, seconds=time.perf_counter() - started)
        for key, value in entry.items():
            self.history.setdefault(key, []).append(value)
        self.epoch = epoch + 1
        best = self.best
        if entry["val_cer"] < best["cer"] or (
            entry["val_cer"] == best["cer"] and entry["val_loss"] < best["loss"]
        ):
            self.best = {"epoch": self.epoch, "cer": entry["val_cer"]}
            self.best.update(loss=entry["val_loss"], bad_epochs=0)
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            best["bad_epochs"] += 1
        if self.ctx.is_main:
            logger.info(
                "epoch %d/%d: train loss %.4f, val loss %.4f, val CER %.3f (best %.3f at %d)",
                self.epoch,
                self.args["epochs"],
                entry["train_loss"],
                entry["val_loss"],
                entry["val_cer"],
                self.best["cer"],
                self.best["epoch"],
            )
            save_checkpoint(epoch_path(out, self.epoch), self.state(), self.meta)
            prune_epochs(out, self.given["keep_checkpoints"])
        return entry

    def train_epoch(self, epoch: int, show: bool) -> dict[str, float]:
        """One pass over this rank's share of the training sentences."""
        ctx = self.ctx
        torch.manual_seed(self.args["seed"] * 1_000_003 + epoch * 1_009 + ctx.rank)
        self.sampler.set_epoch(epoch)
        self.module.train()
        total, n_batches, cers, n_sentences = 0.0, 0, [], 0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}", leave=False, disable=not show)
        for batch in bar:
            batch = to_device(batch, ctx.device)
            with self.autocast():
                loss, outputs = self.module(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total, n_batches = total + float(loss.detach()), n_batches + 1
            cers += [row["cer"] for row in score_rows(batch_texts(batch, outputs))]
            n_sentences += len(batch["subject"])
            bar.set_postfix(loss=f"{total / n_batches:.3f}", cer=f"{np.mean(cers):.3f}")
        total, n_batches, cer_sum, n_cer = distributed.sum_scalars(
            ctx, total, n_batches, float(np.sum(cers)), len(cers)
        )
        per_rank = distributed.gather(ctx, n_sentences)
        return {
            "train_loss": total / max(n_batches, 1),
            "train_cer": cer_sum / max(n_cer, 1),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "sentences_per_rank": per_rank,
        }

    def validate(self) -> dict[str, float]:
        """Validation loss and CER (rank 0)."""
        result = evaluate(self.loss_module, self.loaders["val"], self.ctx.device, self.autocast)
        entry = {"val_loss": result["loss"], "val_cer": result["cer"]}
        if "cer_conv" in result:
            entry["val_cer_conv"] = result["cer_conv"]
        return entry

    def finish(self, out: Path, started: float) -> dict[str, Any]:
        """Evaluate the best epoch, write the final checkpoint, report and bundle (rank 0)."""
        from models.train_output import write_outputs

        self.model.load_state_dict(self.best_state)
        metrics = None
        if self.ctx.is_main:
            results = {
                key: evaluate(self.loss_module, self.loaders[key], self.ctx.device, self.autocast)
                for key in ("val", "test")
            }
            metrics = write_outputs(self, results, out, started)
        return distributed.broadcast(self.ctx, metrics)


def _check_splits(sets: dict[str, Any]) -> None:
    """Raise if a split has no sentence left (v2 skips sentences that hold invalid samples)."""
    empty = [key for key, view in sets.items() if len(view) == 0]
    if empty:
        skipped = sum(getattr(view, "n_skipped", 0) for view in sets.values())
        raise ValueError(
            f"Too little data: the {'/'.join(empty)} split(s) hold no usable sentence "
            f"({skipped} sentences skipped because their data hold invalid samples such as NaN "
            "stretches or gaps). Record more sentences, or train the keystroke decoder (v1)."
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.train`` (and ``torchrun ... -m models.train``): train a typing decoder."""
    import argparse

    from bci_app.cli.train import add_train_arguments, run_train

    parser = argparse.ArgumentParser(
        prog="python -m models.train", description="Train a Brain2Qwerty typing decoder."
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(
        level=logging.INFO if main_rank else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return run_train(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"python -m models.train: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
