"""Training decoders: one trainer (:mod:`~models.training.runner`) run with a task.

- :func:`train_typing` (:mod:`~models.training.typing_task`): Brain2Qwerty v1/v2 on calibration
  recordings;
- :func:`train_speech` (:mod:`~models.training.speech_task`): the contrastive speech decoder on
  listening recordings.

Both resolve their settings the same way (:mod:`~models.training.settings`), train under
``torchrun`` the same way (:mod:`~models.training.distributed`), and write and resume the same
checkpoints (:mod:`models.checkpoint`): each kind of decoder is a
:class:`~models.training.task.TrainingTask` that :func:`run_training` runs.
"""

from __future__ import annotations

from models.training.runner import Trainer, run_training
from models.training.speech_task import SpeechTask, train_speech
from models.training.task import Evaluation, TaskSetup, TrainingTask
from models.training.typing_task import TypingTask, train_typing

__all__ = [
    "Evaluation",
    "SpeechTask",
    "TaskSetup",
    "Trainer",
    "TrainingTask",
    "TypingTask",
    "run_training",
    "train_speech",
    "train_typing",
]
