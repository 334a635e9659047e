"""Training the speech decoder: :func:`train_speech` and its :class:`SpeechTask`.

The task builds the dataset (:func:`models.speech.data.build_speech_dataset`), splits it by
sentence, and trains the CLIP objective on the training split's word windows plus its 0.5 s-hop
windows. After every epoch it scores retrieval on the validation word windows (top-1/top-10 of
each window's own audio segment among all validation segments); validation top-10 picks the best
epoch. At the end it scores the test split, makes the candidate set (one per distinct word heard,
:func:`models.speech.bundle.word_prototypes`) and writes the bundle, ``checkpoint.pt`` (with the
candidates) and ``report/`` (:mod:`models.speech.bundle`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bci_app.processing.resampling import ANTI_ALIAS
from bci_app.speech.decoder import retrieval_ranks
from bci_app.speech.extractors import audio_features_spec, features_from_spec, make_features
from models.registry import build_model, get_config
from models.speech.bundle import (
    export_speech_checkpoint,
    word_prototypes,
    write_report,
)
from models.speech.data import SpeechDataset, build_speech_dataset, window_spec
from models.speech.model import SpeechClip, with_spatial_dims
from models.training.distributed import DistContext
from models.training.runner import run_training
from models.training.settings import Acceleration, config_name, provenance
from models.training.task import Evaluation, TaskSetup, TrainingTask

ARCH = "speech_clip"
#: Training settings used when neither the caller nor a resumed checkpoint gives them.
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
    "anti_alias": "minphase",
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
    init: str | Path | None = None,
    device: str = "auto",
    subject_ids: Sequence[Any] | None = None,
    picks: Sequence[str] | None = None,
    name: str | None = None,
    audio_model: str | Path | None = None,
    audio_layers: Sequence[int] | None = None,
    anti_alias: str | None = None,
    export: bool = True,
    progress: bool = True,
    keep_checkpoints: int = 3,
    acceleration: Acceleration | None = None,
) -> dict[str, Any]:
    """Train a speech decoder on listening ``recordings``; write the bundle to ``out_bundle``.

    Settings left as None take :data:`DEFAULTS` (or the resumed checkpoint's); the run's options
    (``resume``, ``device``, ``export``, ``progress``, ``keep_checkpoints``,
    ``acceleration``) are those of
    :func:`models.training.typing_task.train_typing`. ``audio_dirs``: one stimulus folder per
    recording (:mod:`bci_app.speech.heard`). ``audio_model``: a local wav2vec2-family checkpoint
    folder whose hidden states (``audio_layers``, default the last 4, averaged) replace the
    log-mel features (:mod:`bci_app.speech.pretrained`). ``anti_alias``: the resampler's
    anti-alias FIR, ``"minphase"`` (default) or ``"linear"`` (:class:`PreprocessConfig`).
    ``init``: a pretrained checkpoint (or its training folder) to fine-tune from
    (:func:`models.checkpoint.load_pretrained`; a new subject's spatial head and subject layer
    start as the mean of the pretrained subjects'). Returns the metrics (validation/test top-1
    and top-10 with N and chance, epochs, paths).
    """
    settings = dict(
        config=config,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        seed=seed,
        picks=picks,
        audio_layers=list(audio_layers) if audio_layers else None,
        anti_alias=anti_alias,
        init=init,
    )
    task = SpeechTask(
        recordings,
        audio_dirs=audio_dirs,
        subject_ids=subject_ids,
        name=name,
        audio_model=audio_model,
    )
    return run_training(
        task,
        out_bundle,
        settings,
        resume=resume,
        device=device,
        export=export,
        progress=progress,
        keep_checkpoints=keep_checkpoints,
        acceleration=acceleration,
    )


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
    """``forward(batch) -> (loss, {})`` around the model (what DDP wraps)."""

    def __init__(self, model: SpeechClip) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return self.model.loss(batch["x"], batch["subject"], batch["mel"])[0], {}


class SpeechTask(TrainingTask):
    """The contrastive speech decoder on listening recordings; validation top-10 picks the best.

    Parameters
    ----------
    recordings : sequence of path | Recording
    audio_dirs : sequence of path | None
        Stimulus folder per recording.
    subject_ids : sequence | None
        One subject label per recording.
    name : str | None
        Decoder name in the manifest (default: the output folder's name).
    audio_model : path | None
        Local pretrained audio model (default: log-mel features); when resuming, where the
        checkpoint's model lives now if it moved.
    """

    defaults = DEFAULTS
    metric = "top10"
    higher_is_better = True
    metric_label = "top-10"

    def __init__(
        self,
        recordings: Sequence[Any],
        *,
        audio_dirs: Sequence[Any] | None = None,
        subject_ids: Sequence[Any] | None = None,
        name: str | None = None,
        audio_model: str | Path | None = None,
    ) -> None:
        self.recordings, self.audio_dirs, self.subject_ids = recordings, audio_dirs, subject_ids
        self.name, self.audio_model = name, audio_model

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Refuse an unknown anti-alias filter."""
        if settings["anti_alias"] not in ANTI_ALIAS:
            raise ValueError(
                f"Invalid value for 'anti_alias': {settings['anti_alias']!r}; use one of "
                f"{', '.join(ANTI_ALIAS)}."
            )

    def architecture(self, settings: Mapping[str, Any]) -> str:
        """``speech_clip``."""
        return ARCH

    def prepare(self, settings, ctx: DistContext, out: Path, saved_meta) -> TaskSetup:
        """Audio features, dataset, split, model (audio standardised on the training windows)."""
        base = get_config(ARCH, settings["config"])
        device = str(ctx.device)
        if saved_meta is not None:  # the extractor it was trained with (checked by fingerprint)
            spec = audio_features_spec(saved_meta.get("audio_features"), saved_meta.get("mel"))
            features = features_from_spec(spec, self.audio_model, device=device)
        else:
            features = make_features(
                base.sfreq, base.n_mels, self.audio_model, settings["audio_layers"], device=device
            )
        base = dataclasses.replace(base, n_mels=features.n_features)
        self.data = build_speech_dataset(
            self.recordings,
            base,
            audio_dirs=self.audio_dirs,
            subject_ids=self.subject_ids,
            picks=settings["picks"],
            features=features,
            anti_alias=settings["anti_alias"],
        )
        model_config = with_spatial_dims(base, list(self.data.channels.types))
        self.split = self.data.split(seed=settings["seed"])
        meta = describe(self.data, self.split, settings, model_config, out, self.name, ctx)
        data = self.data
        self.model = build_model(
            ARCH, model_config, data.n_chans, data.channels.positions, data.n_subjects
        ).to(ctx.device)
        train_index = np.concatenate([self.split["train"]["train"], self.split["train"]["word"]])
        self.model.audio.set_statistics(data.mel[train_index])
        windows = _Windows(data, train_index)
        return TaskSetup(
            meta=meta,
            model=self.model,
            loss=_Loss(self.model),
            train_set=windows,
            batch_size=max(2, min(settings["batch_size"], len(windows) // ctx.world_size)),
            drop_last=True,
            examples="windows",
        )

    def validate(self, ctx: DistContext, autocast) -> dict[str, float]:
        """Retrieval loss, top-1 and top-10 on the validation word windows."""
        result = score(self.model, self.data, self.split["val"]["word"], ctx.device)
        return {f"val_{key}": result[key] for key in ("loss", "top1", "top10")}

    def evaluate(self, ctx: DistContext, autocast) -> Evaluation:
        """Validation/test retrieval with chance levels, per-word scores and the candidate set."""
        results = {
            key: score(self.model, self.data, self.split[key]["word"], ctx.device)
            for key in ("val", "test")
        }
        words = np.flatnonzero(self.data.kind == "word")
        _, audio = embed_windows(self.model, self.data, words, ctx.device)
        texts, embeddings = word_prototypes([self.data.words[i] for i in words], audio)
        metrics: dict[str, Any] = {}
        for key, result in results.items():
            n = result["n_candidates"]
            metrics.update({f"{key}_top1": result["top1"], f"{key}_top10": result["top10"]})
            metrics.update({f"{key}_n_candidates": n, f"{key}_loss": result["loss"]})
            metrics[f"{key}_chance_top1"], metrics[f"{key}_chance_top10"] = 1 / n, min(10, n) / n
        metrics["test_per_word"] = per_word(results["test"])
        metrics["n_bundle_candidates"] = len(texts)
        metrics.update(self.data.stats)
        candidates = {"texts": texts, "embeddings": torch.from_numpy(embeddings)}
        return Evaluation(metrics, results["test"], {"candidates": candidates})

    def write_report(self, folder: Path, history, test, meta) -> Path:
        """Learning curves and the test rank histogram (:mod:`models.speech.bundle`)."""
        return write_report(folder, history, test, meta)

    def export(self, checkpoint: Path, out: Path) -> dict[str, Any]:
        """The speech bundle (:func:`models.speech.bundle.export_speech_checkpoint`)."""
        return export_speech_checkpoint(checkpoint, out)


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


def per_word(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Top-1 and top-10 of each (lower-cased) word of a scored split."""
    table: dict[str, list[int]] = {}
    for word, rank in zip(result["words"], result["ranks"].tolist()):
        table.setdefault(word.lower(), []).append(rank)
    return {
        word: {
            "n": len(ranks),
            "top1": float(np.mean(np.array(ranks) < 1)),
            "top10": float(np.mean(np.array(ranks) < 10)),
        }
        for word, ranks in sorted(table.items())
    }


def describe(data, split, settings, model_config, out: Path, name, ctx) -> dict[str, Any]:
    """The JSON description saved in every checkpoint (and turned into the manifest)."""
    sizes = {k: {kind: len(v) for kind, v in parts.items()} for k, parts in split.items()}
    return {
        "name": name or out.resolve().name,
        "arch": ARCH,
        "config_name": config_name(settings["config"]),
        "model_config": model_config.to_dict(),
        "n_chans": data.n_chans,
        "n_subjects": data.n_subjects,
        "subject_labels": [str(s) for s in data.subject_labels],
        "channels": data.channels.to_dict(),
        "sfreq_in": data.sfreq_in,
        "preprocessing": data.preprocessing.to_dict(),
        "window": window_spec(model_config),
        "audio_features": data.features.to_dict(),
        "train": settings,
        "data": {"summary": f"{len(data.sentences)} sentences, {data.stats}", "split": sizes},
        "dataset_stats": data.stats,
        "provenance": provenance(settings, data.provenance, ctx.world_size),
        "metrics": {},
    }
