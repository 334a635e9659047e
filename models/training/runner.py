"""The training loop every decoder shares: :func:`run_training` runs a task with a :class:`Trainer`.

A run resolves its settings (:func:`models.training.settings.resolve_settings`), lets the task
build its data and model (:meth:`~models.training.task.TrainingTask.prepare`), starts the model
from a pretrained checkpoint when the ``init`` setting names one
(:func:`models.checkpoint.load_pretrained`: fine-tuning, per-subject weights mapped by label,
a new subject from the pretrained subjects' mean), then trains with
AdamW and a one-cycle schedule, validates after every epoch on rank 0, keeps the best weights by
the task's validation metric (ties broken by the validation loss), stops early after
``patience`` epochs without a better one, and writes a checkpoint per epoch
(``OUT/checkpoints/epoch_NNNN.pt``, the newest few kept; :mod:`models.checkpoint`). At the end,
rank 0 scores the best weights and writes ``OUT/checkpoint.pt``, ``OUT/report/`` and the bundle.

The same code runs under ``torchrun --nproc_per_node=N -m bci_app.cli.train typing|speech ...``
(:mod:`models.training.distributed`): each process trains on its share of the examples
(``DistributedSampler``), gradients are averaged by DDP, and rank 0 validates, logs and writes.
Mixed precision (``torch.autocast``) is used on CUDA by default: bfloat16 where supported, else
float16 with a gradient scaler; :class:`~models.training.settings.Acceleration` picks another
precision (bf16 on the CPU too), ``torch.compile`` and pinned-memory loaders.
Randomness (initialisation, split, order, dropout) follows ``seed``; the
randomness of epoch ``e`` on rank ``r`` is reseeded from ``(seed, e, r)``, so a resumed run
repeats what the uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from models.checkpoint import (
    FINAL_NAME,
    discard_epochs_after,
    epoch_path,
    load_checkpoint,
    load_pretrained,
    prune_epochs,
    resolve_resume,
    save_checkpoint,
)
from models.training import distributed
from models.training.distributed import DistContext
from models.training.settings import (
    Acceleration,
    autocast_factory,
    resolve_settings,
    seed_everything,
)
from models.training.task import TaskSetup, TrainingTask

logger = logging.getLogger("models.training")


def run_training(
    task: TrainingTask,
    out: str | Path,
    settings: Mapping[str, Any],
    *,
    resume: str | Path | None = None,
    device: str = "auto",
    export: bool = True,
    progress: bool = True,
    keep_checkpoints: int = 3,
    acceleration: Acceleration | None = None,
) -> dict[str, Any]:
    """Train ``task`` and write its checkpoint, report and bundle to ``out``.

    Parameters
    ----------
    task : TrainingTask
        The decoder to train, holding its recordings.
    out : path
        Output folder (bundle, ``checkpoint.pt``, ``checkpoints/``, ``report/``).
    settings : mapping
        The task's settings (keys of ``task.defaults``); None values take the resumed
        checkpoint's or the defaults.
    resume : path | None
        Checkpoint (or output folder) to continue from.
    device : {"auto", "cpu", "cuda", "cuda:N"}
    export : bool
        Write the ONNX bundle (False: checkpoint and report only).
    progress : bool
        Show tqdm progress bars (rank 0 only).
    keep_checkpoints : int
        Per-epoch checkpoints kept.
    acceleration : Acceleration | None
        Mixed precision, ``torch.compile`` and pinned memory (default: :class:`Acceleration`).

    Returns
    -------
    metrics : dict
        The task's validation and test scores, the run's facts (``epochs_run``, ``best_epoch``,
        ``stopped_early``, ``world_size``, ``device``, ``train_seconds``) and ``paths``.
    """
    ctx = distributed.setup(device)
    finished = False
    try:
        keep = keep_checkpoints
        metrics = _train(
            task, ctx, Path(out), settings, resume, export, progress, keep, acceleration
        )
        finished = True
        return metrics
    finally:
        if finished:
            distributed.cleanup(ctx)
        elif ctx.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(task, ctx, out, given, resume, export, progress, keep, accel) -> dict[str, Any]:
    started = time.perf_counter()
    checkpoint = load_checkpoint(resolve_resume(resume)) if resume else None
    saved_meta = checkpoint["meta"] if checkpoint is not None else None
    settings = resolve_settings(task, given, saved_meta["train"] if saved_meta else None)
    seed_everything(settings["seed"])
    setup = task.prepare(settings, ctx, out, saved_meta)
    if checkpoint is None and settings.get("init") is not None:
        summary = load_pretrained(setup.model, settings["init"], setup.meta, keep=task.init_keeps)
        setup.meta["init"] = summary
        setup.meta.setdefault("provenance", {})["init"] = summary
        if ctx.is_main:
            logger.info(
                "Fine-tuning from %s (subjects %s; new subjects' slots from: %s).",
                summary["path"],
                ", ".join(summary["subjects"]) or "-",
                summary["subjects_from"],
            )
    if saved_meta is not None and saved_meta["data"] != setup.meta["data"]:
        raise ValueError(
            f"Invalid value for 'resume': the checkpoint was trained on other data "
            f"({saved_meta['data']['summary']}) than these recordings "
            f"({setup.meta['data']['summary']}). Resume with the same recordings, or start anew."
        )
    trainer = Trainer(
        task, setup, settings, ctx, progress=progress, keep_checkpoints=keep, acceleration=accel
    )
    if checkpoint is not None:
        trainer.restore(checkpoint)
    trainer.fit(out)
    return trainer.finish(out, started, export)


class Trainer:
    """The moving parts of one run: model, optimizer, schedule, loader, history, best epoch."""

    def __init__(
        self,
        task: TrainingTask,
        setup: TaskSetup,
        settings: dict[str, Any],
        ctx: DistContext,
        *,
        progress: bool = True,
        keep_checkpoints: int = 3,
        acceleration: Acceleration | None = None,
    ) -> None:
        self.task, self.settings, self.ctx, self.meta = task, settings, ctx, setup.meta
        self.acceleration = accel = acceleration or Acceleration()
        self.model, self.module = setup.model, setup.loss
        self.show = progress and ctx.is_main
        self.keep_checkpoints = keep_checkpoints
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.module = torch.nn.parallel.DistributedDataParallel(setup.loss, device_ids=ids)
        if accel.compile:
            # compiled around DDP, as torch recommends: DDP's bucketing still overlaps the
            # gradient all-reduce with the backward pass
            self.module = torch.compile(self.module, mode=accel.compile_mode)
        pin = ctx.device.type == "cuda" if accel.pin_memory is None else accel.pin_memory
        self.sampler = DistributedSampler(
            setup.train_set,
            ctx.world_size,
            ctx.rank,
            shuffle=True,
            seed=settings["seed"],
            drop_last=setup.drop_last,
        )
        self.loader = DataLoader(
            setup.train_set,
            setup.batch_size,
            sampler=self.sampler,
            collate_fn=setup.collate,
            drop_last=setup.drop_last,
            pin_memory=pin,
        )
        if len(self.loader) == 0:
            raise ValueError(
                f"Too little data: {len(setup.train_set)} training {setup.examples} make no "
                f"batch of {setup.batch_size} on {ctx.world_size} process(es). Record a longer "
                "session, or train with fewer processes."
            )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
        )
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=settings["lr"],
            total_steps=settings["epochs"] * len(self.loader),
            pct_start=0.2,
        )
        self.autocast, amp_dtype = autocast_factory(ctx.device, accel.precision)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=ctx.device.type == "cuda" and amp_dtype == torch.float16
        )
        self.epoch, self.history = 0, {}
        worst = -math.inf if task.higher_is_better else math.inf
        self.best = {"epoch": 0, task.metric: worst, "loss": math.inf, "bad_epochs": 0}
        self.best_state = copy.deepcopy(self.model.state_dict())

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, history, best so far."""
        self.model.load_state_dict(checkpoint["model"])
        self.best_state = checkpoint["best_model"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if "scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.history = int(checkpoint["epoch"]), dict(checkpoint["history"])
        self.best = dict(checkpoint["best"])
        if self.ctx.is_main:
            logger.info("Resuming after epoch %d of %d.", self.epoch, self.settings["epochs"])

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
        """Train until the last epoch or until the validation metric stops improving."""
        if self.ctx.is_main and (stale := discard_epochs_after(out, self.epoch)):
            logger.warning("Removed %d checkpoints of an earlier run from %s.", stale, out)
        epochs, key = self.settings["epochs"], f"val_{self.task.metric}"
        bar = tqdm(
            range(self.epoch, epochs),
            desc="training",
            unit="epoch",
            initial=self.epoch,
            total=epochs,
            disable=not self.show,
            dynamic_ncols=True,
        )
        with logging_redirect_tqdm() if self.show else contextlib.nullcontext():
            for epoch in bar:
                if self.best["bad_epochs"] >= self.settings["patience"]:
                    break
                entry = self.run_epoch(epoch, out)
                bar.set_postfix({"loss": f"{entry['train_loss']:.3f}", key: f"{entry[key]:.3f}"})

    def run_epoch(self, epoch: int, out: Path) -> dict[str, Any]:
        """Train one epoch, validate, track the best weights, write the epoch's checkpoint."""
        started = time.perf_counter()
        train = self.train_epoch(epoch)
        validation = self.task.validate(self.ctx, self.autocast) if self.ctx.is_main else None
        entry = distributed.broadcast(self.ctx, validation)
        entry.update(train, seconds=time.perf_counter() - started)
        for key, value in entry.items():
            self.history.setdefault(key, []).append(value)
        self.epoch = epoch + 1
        metric = self.task.metric
        if self._improves(entry[f"val_{metric}"], entry["val_loss"]):
            self.best = {"epoch": self.epoch, metric: entry[f"val_{metric}"]}
            self.best.update(loss=entry["val_loss"], bad_epochs=0)
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.best["bad_epochs"] += 1
        if self.ctx.is_main:
            logger.info(
                "epoch %d/%d: train loss %.4f, val loss %.4f, val %s %.3f (best %.3f at %d)",
                self.epoch,
                self.settings["epochs"],
                entry["train_loss"],
                entry["val_loss"],
                self.task.metric_label,
                entry[f"val_{metric}"],
                self.best[metric],
                self.best["epoch"],
            )
            save_checkpoint(epoch_path(out, self.epoch), self.state(), self.meta)
            prune_epochs(out, self.keep_checkpoints)
        return entry

    def _improves(self, value: float, loss: float) -> bool:
        """Whether a validation score beats the best so far (equal scores: the lower loss)."""
        best = self.best[self.task.metric]
        better = value > best if self.task.higher_is_better else value < best
        return better or (value == best and loss < self.best["loss"])

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over this rank's share of the training examples."""
        ctx = self.ctx
        torch.manual_seed(self.settings["seed"] * 1_000_003 + epoch * 1_009 + ctx.rank)
        self.sampler.set_epoch(epoch)
        self.module.train()
        total, n_batches, sums = 0.0, 0, {}
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}", leave=False, disable=not self.show)
        for batch in bar:
            batch = {key: value.to(ctx.device, non_blocking=True) for key, value in batch.items()}
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
            for key, value in self.task.tally(batch, outputs).items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix(loss=f"{total / n_batches:.3f}")
        total, n_batches = distributed.sum_scalars(ctx, total, n_batches)
        return {
            "train_loss": total / max(n_batches, 1),
            **self.task.train_summary(distributed.gather(ctx, sums)),
            "lr": float(self.scheduler.get_last_lr()[0]),
        }

    def finish(self, out: Path, started: float, export: bool) -> dict[str, Any]:
        """Score the best epoch; write the final checkpoint, report and bundle (rank 0)."""
        self.model.load_state_dict(self.best_state)
        result = None
        if self.ctx.is_main:
            evaluation = self.task.evaluate(self.ctx, self.autocast)
            metrics = {**evaluation.metrics, **self._facts(started)}
            self.meta["metrics"] = metrics
            checkpoint = save_checkpoint(
                out / FINAL_NAME, {**self.state(), **evaluation.state}, self.meta
            )
            folder = out / "report"
            report = self.task.write_report(folder, self.history, evaluation.test, self.meta)
            paths = {"checkpoint": str(checkpoint), "report": str(report)}
            if export:
                exported = self.task.export(checkpoint, out)
                paths["bundle"] = str(exported["bundle"].path)
                metrics["export_max_abs_diff"] = exported["max_abs_diff"]
            metrics["train_seconds"] = round(time.perf_counter() - started, 2)
            result = {**metrics, "paths": paths}
        return distributed.broadcast(self.ctx, result)

    def _facts(self, started: float) -> dict[str, Any]:
        """Epochs run, best epoch, early stop, processes, device and seconds so far."""
        return {
            "epochs_run": self.epoch,
            "best_epoch": self.best["epoch"],
            "stopped_early": self.epoch < self.settings["epochs"],
            "train_seconds": round(time.perf_counter() - started, 2),
            "world_size": self.ctx.world_size,
            "device": str(self.ctx.device),
        }
