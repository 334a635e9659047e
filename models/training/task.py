"""What a decoder brings to the trainer: its data, model, loss, validation metric and outputs.

:class:`models.training.runner.Trainer` runs every task the same way (settings, seeding, DDP,
AdamW with a one-cycle schedule, mixed precision, early stopping, per-epoch checkpoints and
resume, the final checkpoint, report and bundle). A :class:`TrainingTask` says what differs:

- ``defaults``: the settings it takes (checked by
  :func:`models.training.settings.resolve_settings`);
- :meth:`~TrainingTask.prepare`: build the dataset, its split, the model, the loss module and
  the run's description (:class:`TaskSetup`);
- :meth:`~TrainingTask.tally` / :meth:`~TrainingTask.train_summary`: what an epoch records about
  its training batches besides the loss;
- :meth:`~TrainingTask.validate`: the validation loss and metric (``metric``, with
  ``higher_is_better``) that picks the best epoch and stops early;
- :meth:`~TrainingTask.evaluate`, :meth:`~TrainingTask.write_report`,
  :meth:`~TrainingTask.export`: score the best weights, draw the report and write the bundle.

The typing decoders (:class:`models.training.typing_task.TypingTask`) and the speech decoder
(:class:`models.training.speech_task.SpeechTask`) are the two tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn
from torch.utils.data import Dataset

from models.training.distributed import DistContext


@dataclass(frozen=True)
class TaskSetup:
    """What :meth:`TrainingTask.prepare` hands the trainer.

    Attributes
    ----------
    meta : dict
        The run's description, saved in every checkpoint (and turned into the manifest). It has
        ``train`` (the settings) and ``data`` (what a resumed run must find again).
    model : nn.Module
        The decoder, on the run's device.
    loss : nn.Module
        ``forward(batch) -> (loss, outputs)`` around the model: what DDP wraps.
    train_set : Dataset
        Training examples; each process draws its share with a ``DistributedSampler``.
    batch_size : int
        Examples per step and process.
    collate : callable | None
        Batch builder of the loader (None: torch's default).
    drop_last : bool
        Drop the last incomplete batch (and the sampler's remainder).
    examples : str
        What one training example is, for messages ("sentences", "windows").
    """

    meta: dict[str, Any]
    model: nn.Module
    loss: nn.Module
    train_set: Dataset
    batch_size: int
    collate: Callable | None = None
    drop_last: bool = False
    examples: str = "examples"


@dataclass
class Evaluation:
    """What the best weights scored (rank 0, after training).

    Attributes
    ----------
    metrics : dict
        Validation and test scores and dataset counts (the trainer adds the run's facts).
    test : dict
        The test split's details the report draws.
    state : dict
        Extra entries of the final checkpoint (e.g. the speech candidate set).
    """

    metrics: dict[str, Any]
    test: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)


class TrainingTask(ABC):
    """One kind of decoder to train: its settings, data, model, metric and outputs."""

    #: Settings the task takes and their defaults (all of them compared on resume).
    defaults: ClassVar[Mapping[str, Any]]
    #: Validation metric that picks the best epoch: ``history["val_<metric>"]``, ``best[metric]``.
    metric: ClassVar[str]
    #: Whether a larger metric is better (top-10 accuracy) or a smaller one (CER).
    higher_is_better: ClassVar[bool]
    #: The metric's name in log lines.
    metric_label: ClassVar[str]
    #: State-dict key prefixes that fine-tuning (the ``init`` setting) leaves as :meth:`prepare`
    #: built them instead of copying them from the pretrained checkpoint.
    init_keeps: ClassVar[tuple[str, ...]] = ()

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Raise ValueError for a task-specific setting that is invalid (none by default)."""

    @abstractmethod
    def architecture(self, settings: Mapping[str, Any]) -> str:
        """The registered model (:data:`models.registry.MODELS`) these settings train."""

    @abstractmethod
    def prepare(
        self,
        settings: Mapping[str, Any],
        ctx: DistContext,
        out: Path,
        saved_meta: Mapping[str, Any] | None,
    ) -> TaskSetup:
        """Build the dataset, split, model and description; ``saved_meta`` when resuming."""

    def tally(self, batch: dict[str, Any], outputs: Any) -> dict[str, float]:
        """Counts of one training batch, summed over the epoch's batches (none by default)."""
        return {}

    def train_summary(self, per_rank: list[dict[str, float]]) -> dict[str, Any]:
        """History entries made from each rank's summed :meth:`tally` (none by default)."""
        return {}

    @abstractmethod
    def validate(self, ctx: DistContext, autocast: Callable[[], Any]) -> dict[str, float]:
        """Rank 0: ``val_loss``, ``val_<metric>`` and other validation scores."""

    @abstractmethod
    def evaluate(self, ctx: DistContext, autocast: Callable[[], Any]) -> Evaluation:
        """Rank 0, best weights loaded: score the validation and test splits."""

    @abstractmethod
    def write_report(
        self, folder: Path, history: dict[str, list], test: dict[str, Any], meta: dict[str, Any]
    ) -> Path:
        """Draw the report into ``folder``; return its HTML page."""

    @abstractmethod
    def export(self, checkpoint: Path, out: Path) -> dict[str, Any]:
        """Write the bundle of the final checkpoint; return ``bundle`` and ``max_abs_diff``."""
