"""The Brain2Qwerty typing decoders: models, configs, datasets, losses, report and bundle export.

- :mod:`~models.typing.model`: :class:`Brain2QwertyV1` (keystroke-locked) and
  :class:`Brain2QwertyV2` (CTC), with their configs in :mod:`~models.typing.config`;
- :mod:`~models.typing.data`: keystroke windows grouped into sentences, from calibration
  recordings, and :mod:`~models.typing.datasets`: their torch views;
- :mod:`~models.typing.steps`: losses, predictions and CER;
- :mod:`~models.typing.report`: the training report;
- :mod:`~models.typing.bundle`: a checkpoint's bundle (graphs, manifest, LM).

Importing the package loads the models and configs only (not the dataset, the exporter or the
registry); training is :mod:`models.training.typing_task`.
"""

from __future__ import annotations

from models.typing.config import BLANK_INDEX, Brain2QwertyV1Config, Brain2QwertyV2Config
from models.typing.model import Brain2QwertyV1, Brain2QwertyV2

__all__ = [
    "BLANK_INDEX",
    "Brain2QwertyV1",
    "Brain2QwertyV1Config",
    "Brain2QwertyV2",
    "Brain2QwertyV2Config",
]
