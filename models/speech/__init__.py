"""The contrastive speech decoder: model, intracranial layers, dataset and bundle export.

- :mod:`~models.speech.model`: :class:`SpeechClip` (brain and audio encoders, CLIP loss) and its
  :class:`SpeechClipConfig`;
- :mod:`~models.speech.layers`: 3D spatial attention for intracranial contacts;
- :mod:`~models.speech.data`: brain windows paired with the heard audio, from listening
  recordings;
- :mod:`~models.speech.bundle`: a checkpoint's bundle (graphs, candidates, manifest) and report.

Importing the package loads the model only (not the dataset, the exporter or the registry);
training is :mod:`models.training.speech_task`.
"""

from __future__ import annotations

from models.speech.model import SpeechClip, SpeechClipConfig, clip_loss, with_spatial_dims

__all__ = ["SpeechClip", "SpeechClipConfig", "clip_loss", "with_spatial_dims"]
