"""Training a Brain2Qwerty typing decoder: :func:`train_typing` and its :class:`TypingTask`.

The task builds the dataset (:func:`models.typing.data.build_typing_dataset`), splits it by
sentence, and trains v1 (keystroke-locked windows, cross-entropy on both heads) or v2 (continuous
spans, CTC) with the losses of :mod:`models.typing.steps`; the validation CER picks the best epoch.
It writes, into the output folder:

- the decoder bundle (``manifest.json``, ONNX graphs, ``lm.npz``; :mod:`models.typing.bundle`),
- ``checkpoint.pt``: the final checkpoint (best weights, metrics), which ``bci-app export`` reads,
- ``report/``: learning curves, confusion matrix and per-sentence CER (:mod:`models.typing.report`).

The description every checkpoint carries (:func:`describe`) says what the decoder reads
(channels, rate, preprocessing with its scaler, window), how it was built (architecture, config,
training settings) and from what (recordings, their sha256 or simulator parameters, the
dataset's fingerprint, which a resumed run must match).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from acquisition.simulator.sentences import sentence_key
from bci_app.typing.alphabet import cer, classes_to_text
from models.registry import build_model, get_config
from models.training.distributed import DistContext
from models.training.runner import run_training
from models.training.settings import Acceleration, config_name, provenance
from models.training.task import Evaluation, TaskSetup, TrainingTask
from models.typing.data import WINDOW, TypingDataset, build_typing_dataset
from models.typing.datasets import (
    ContinuousSentences,
    KeystrokeSentences,
    collate_continuous,
    collate_keystrokes,
)
from models.typing.steps import LossModule, batch_texts, evaluate, score_rows

#: ``arch`` settings and the registered models they name.
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
    # text pretraining of v1's residual transformer (models.typing.pretrain): on held-out
    # sessions it took + transformer below conv only where the jointly trained one was not
    # (bench_typing --ablation, issue 14); a calibration too small for it skips it by itself.
    # 4000 steps from the shipped context prior: below conv only in the mean in the four
    # conditions compared, where 1000 steps were half as far (docs/BENCHMARKS.md)
    "text_pretrain": 4000,
}


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
    text_pretrain: int | None = None,
    resume: str | Path | None = None,
    init: str | Path | None = None,
    device: str = "auto",
    subject_ids: Sequence[Any] | None = None,
    picks: Sequence[str] | None = None,
    name: str | None = None,
    export: bool = True,
    progress: bool = True,
    keep_checkpoints: int = 3,
    acceleration: Acceleration | None = None,
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
        Training settings (:data:`DEFAULTS`); ``batch_size`` counts sentences per process, ``lr``
        is the one-cycle peak, ``patience`` the epochs without a better validation CER before
        stopping, ``crop`` (v1) the probability that a training sentence is cut to a random run
        of its keystrokes (:class:`models.typing.datasets.KeystrokeSentences`).
    text_pretrain : int | None
        v1 with a residual sentence transformer: steps of its pretraining on English text
        after the conv module is trained, then fine-tuning
        (:func:`models.typing.pretrain.sentence_stage`; default 4000, skipped when the
        validation split holds too few keystrokes to measure the conv module's confusions);
        0: the jointly trained one is kept.
    resume : path | None
        Checkpoint (or output folder) to continue from. Settings left as None are taken from it;
        settings that differ from it are an error.
    init : path | None
        Pretrained checkpoint (or its training folder) to fine-tune from
        (:func:`models.checkpoint.load_pretrained`): same architecture, config and channels.
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
    acceleration : Acceleration | None
        Mixed precision, ``torch.compile``, pinned memory
        (:class:`models.training.settings.Acceleration`).

    Returns
    -------
    metrics : dict
        Validation and test CER (``val_cer``, ``test_cer``; v1 also ``*_cer_conv``), dataset
        counts (``n_windows``, ``n_dropped_invalid``, ...), epochs run, the best epoch, the
        seconds it took and the paths written.
    """
    settings = dict(
        config=config,
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        seed=seed,
        crop=crop,
        text_pretrain=text_pretrain,
        picks=picks,
        init=init,
    )
    return run_training(
        TypingTask(recordings, subject_ids=subject_ids, name=name),
        out_bundle,
        settings,
        resume=resume,
        device=device,
        export=export,
        progress=progress,
        keep_checkpoints=keep_checkpoints,
        acceleration=acceleration,
    )


class TypingTask(TrainingTask):
    """Brain2Qwerty v1/v2 on calibration recordings; the validation CER picks the best epoch.

    Parameters
    ----------
    recordings : sequence of path | Recording
    subject_ids : sequence | None
        One subject label per recording.
    name : str | None
        Decoder name in the manifest (default: the output folder's name).
    """

    defaults = DEFAULTS
    metric = "cer"
    higher_is_better = False
    metric_label = "CER"

    def __init__(
        self,
        recordings: Sequence[Any],
        *,
        subject_ids: Sequence[Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.recordings, self.subject_ids, self.name = recordings, subject_ids, name

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Check ``arch`` and ``crop``."""
        if settings["arch"] not in ARCHS:
            raise ValueError(
                f"Invalid value for 'arch': {settings['arch']!r}. Use one of {list(ARCHS)}."
            )
        crop = settings["crop"]
        if isinstance(crop, bool) or not (isinstance(crop, int | float) and 0 <= crop <= 1):
            raise ValueError(f"Invalid value for 'crop': {crop!r}; use a probability in [0, 1].")
        steps = settings["text_pretrain"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"Invalid value for 'text_pretrain': {steps!r}; use an integer >= 0.")

    def architecture(self, settings: Mapping[str, Any]) -> str:
        """``brain2qwerty_v1`` or ``brain2qwerty_v2``."""
        return ARCHS[settings["arch"]]

    def prepare(self, settings, ctx: DistContext, out: Path, saved_meta) -> TaskSetup:
        """Dataset, sentence split, views per split, model and description."""
        arch = self.architecture(settings)
        continuous = arch == "brain2qwerty_v2"
        self.dataset = build_typing_dataset(
            self.recordings,
            subject_ids=self.subject_ids,
            picks=settings["picks"],
            continuous=continuous,
        )
        self.split = self.dataset.split(seed=settings["seed"])
        meta = describe(self.dataset, self.split, settings, arch, out, self.name, ctx.world_size)
        model = build_model(
            arch,
            meta["model_config"],
            self.dataset.n_chans,
            self.dataset.channels.positions,
            self.dataset.n_subjects,
        ).to(ctx.device)
        self.arch, self.loss, self.settings = arch, LossModule(model, arch), settings
        if continuous:
            view, collate = ContinuousSentences, collate_continuous
            train = ContinuousSentences(self.dataset, self.split["train"])
        else:
            view, collate = KeystrokeSentences, collate_keystrokes
            train = KeystrokeSentences(self.dataset, self.split["train"], crop=settings["crop"])
        self.sets = {key: view(self.dataset, self.split[key]) for key in ("val", "test")}
        self.sets["train"] = train
        _check_splits(self.sets)
        self.loaders = {
            key: DataLoader(self.sets[key], settings["batch_size"], collate_fn=collate)
            for key in ("val", "test")
        }
        return TaskSetup(
            meta=meta,
            model=model,
            loss=self.loss,
            train_set=self.sets["train"],
            batch_size=settings["batch_size"],
            collate=collate,
            examples="sentences",
        )

    def tally(self, batch: dict[str, Any], outputs: dict[str, Any]) -> dict[str, float]:
        """Summed CER of the batch's sentences, how many were scored, and the sentence count."""
        cers = [row["cer"] for row in score_rows(batch_texts(batch, outputs))]
        return {"cer": float(np.sum(cers)), "n_cer": len(cers), "sentences": len(batch["subject"])}

    def train_summary(self, per_rank: list[dict[str, float]]) -> dict[str, Any]:
        """``train_cer`` over all ranks and ``sentences_per_rank``."""
        cer_sum = sum(rank.get("cer", 0.0) for rank in per_rank)
        n_cer = sum(rank.get("n_cer", 0) for rank in per_rank)
        return {
            "train_cer": cer_sum / max(n_cer, 1),
            "sentences_per_rank": [int(rank.get("sentences", 0)) for rank in per_rank],
        }

    def validate(self, ctx: DistContext, autocast) -> dict[str, float]:
        """Validation loss and CER (v1: also the conv-only head's)."""
        result = evaluate(self.loss, self.loaders["val"], ctx.device, autocast)
        entry = {"val_loss": result["loss"], "val_cer": result["cer"]}
        if "cer_conv" in result:
            entry["val_cer_conv"] = result["cer_conv"]
        return entry

    def evaluate(self, ctx: DistContext, autocast) -> Evaluation:
        """Validation and test CER of the best weights, chance CER and dataset counts.

        A residual v1 transformer is first pretrained on text and fine-tuned
        (``text_pretrain`` steps; :func:`models.typing.pretrain.sentence_stage`), then its
        correction is scaled by the gate with the best validation CER
        (:func:`models.typing.pretrain.fit_gate`); the final checkpoint holds those weights. A v1
        decoder's character-LM weight is then fitted on the validation sentences too
        (:func:`models.typing.pretrain.fit_lm_weight`; the bundle's ``lm.weight``).
        """
        stage, gate, lm_fit, state = None, None, None, {}
        model = self.loss.model
        val = [self.dataset.sentences[i] for i in self.split["val"]]
        residual = getattr(getattr(model, "sentence", None), "residual", False)
        if residual and self.settings["text_pretrain"]:
            from models.typing.pretrain import sentence_stage

            stage = sentence_stage(
                model,
                self.dataset,
                self.split,
                steps=self.settings["text_pretrain"],
                seed=self.settings["seed"],
            )
        if self.arch == "brain2qwerty_v1" and val:
            from bci_app.lm.model import default_lm
            from models.typing.bundle import DECODING, LM_ORDER
            from models.typing.pretrain import fit_gate, fit_lm_weight, sentence_outputs

            # the conv module's embeddings, encoded once: the gate scales the transformer only
            encoded = sentence_outputs(model, val, ctx.device)
            if residual:
                gate = fit_gate(model, encoded)
            lm_fit = fit_lm_weight(model, encoded, default_lm(LM_ORDER), **DECODING)
        if residual:
            state = {"best_model": {k: v.clone() for k, v in model.state_dict().items()}}
        results = {
            key: evaluate(self.loss, self.loaders[key], ctx.device, autocast)
            for key in ("val", "test")
        }
        metrics = self._metrics(results)
        if stage is not None:
            metrics["sentence_stage"] = stage
        if gate is not None:
            metrics["sentence_gate"] = gate
        if lm_fit is not None:
            metrics["lm_fit"] = lm_fit
        return Evaluation(metrics=metrics, test=results["test"], state=state)

    def _metrics(self, results: dict[str, dict]) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for key in ("val", "test"):
            metrics[f"{key}_cer"] = results[key]["cer"]
            metrics[f"{key}_loss"] = results[key]["loss"]
            if "cer_conv" in results[key]:
                metrics[f"{key}_cer_conv"] = results[key]["cer_conv"]
        train_targets = [self.dataset.sentences[i].targets for i in self.split["train"]]
        metrics["test_cer_chance"] = chance_cer(train_targets, results["test"]["sentences"])
        metrics["cer_kind"] = (
            "transformer argmax (cer_conv: conv-only head)"
            if self.arch == "brain2qwerty_v1"
            else "greedy CTC"
        )
        metrics["n_sentences"] = {key: len(self.sets[key]) for key in ("train", "val", "test")}
        for key in ("n_windows", "n_dropped_invalid", "n_dropped_edge", "n_skipped_keys"):
            metrics[key] = self.dataset.stats[key]
        metrics["n_sentences_invalid_span"] = sum(
            getattr(view, "n_skipped", 0) for view in self.sets.values()
        )
        return metrics

    def write_report(self, folder: Path, history, test, meta) -> Path:
        """Learning curves, confusion matrix and per-sentence CER (:mod:`models.typing.report`)."""
        from models.typing.report import write_report

        return write_report(folder, history, test, meta)

    def export(self, checkpoint: Path, out: Path) -> dict[str, Any]:
        """The typing bundle (:func:`models.typing.bundle.export_typing_checkpoint`)."""
        from models.typing.bundle import export_typing_checkpoint

        return export_typing_checkpoint(checkpoint, out)


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


def chance_cer(train_targets: list[np.ndarray], sentences: list[dict[str, Any]]) -> float:
    """CER of always typing the most frequent training class (a floor any decoder must beat)."""
    counts = Counter(int(c) for targets in train_targets for c in targets)
    majority = classes_to_text([counts.most_common(1)[0][0]])
    return float(np.mean([cer(majority * len(s["target"]), s["target"]) for s in sentences]))


def fingerprint(dataset: TypingDataset) -> str:
    """SHA-256 of the dataset's sentences (prompts, classes, windows): resume checks it."""
    digest = hashlib.sha256()
    for sentence in dataset.sentences:
        digest.update(sentence.prompt.encode())
        digest.update(sentence.targets.tobytes())
        digest.update(np.ascontiguousarray(sentence.windows).tobytes())
    return digest.hexdigest()


def describe(
    dataset: TypingDataset,
    split: Mapping[str, np.ndarray],
    settings: dict[str, Any],
    arch: str,
    out: Path,
    name: str | None,
    world_size: int,
) -> dict[str, Any]:
    """The JSON description of a run that every checkpoint carries (module docstring)."""
    preprocessing = dataset.preprocessing
    if arch == "brain2qwerty_v2":
        # v2 reads continuous data: the +-clamp that v1's windower applies is done by the
        # Preprocessor itself, live and in training (models.typing.data clips the same way).
        preprocessing = dataclasses.replace(preprocessing, clamp=WINDOW["clamp"])
    summary = (
        f"{len(dataset.sentences)} sentences, {dataset.n_keystrokes} keystrokes, "
        f"{dataset.n_chans} channels, {len(dataset.provenance)} recording(s)"
    )
    return {
        "name": name or out.resolve().name,
        "arch": arch,
        "config_name": config_name(settings["config"]),
        "model_config": get_config(arch, settings["config"]).to_dict(),
        "n_chans": dataset.n_chans,
        "n_subjects": dataset.n_subjects,
        "subject_labels": [str(label) for label in dataset.subject_labels],
        "channels": dataset.channels.to_dict(),
        "sfreq_in": dataset.sfreq_in,
        "preprocessing": preprocessing.to_dict(),
        "window": dict(WINDOW),
        "train": settings,
        "data": {
            "fingerprint": fingerprint(dataset),
            "summary": summary,
            "split": {key: len(index) for key, index in split.items()},
            "subjects": [str(label) for label in dataset.subject_labels],
        },
        "dataset_stats": dataset.stats,
        "provenance": {
            **provenance(settings, dataset.provenance, world_size),
            # which sentences it has seen, so evaluation can say if a test sentence was trained on
            "training_sentences": sorted({sentence_key(s.prompt) for s in dataset.sentences}),
        },
        "metrics": {},
    }
