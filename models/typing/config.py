"""Configurations of the Brain2Qwerty typing decoders (frozen, JSON round trip), with presets.

Two presets per architecture:

- ``"paper"``: sizes of the published lineage where they are published, our choices elsewhere.
  Published (Défossez et al. 2023, the convolutional front end that Brain2Qwerty builds on):
  270 spatial-attention output channels, 32 Fourier harmonics per axis (2 * 32**2 = 2048 position
  features), spatial dropout radius 0.2 (positions in [0, 1]), 320 hidden channels, 5 blocks of 3
  dilated convolutions (15 layers). Published for Brain2Qwerty (DESIGN.md): sampling rate 50 Hz,
  window -0.2..+0.3 s, kernel 3 with dilations 1, 2, 4 repeating, BatchNorm, GELU, dropout,
  LayerScale, attention pooling, 29 classes, ~40 ms frames and a Conformer for v2.
  Our assumptions (not published in what this project builds from): the transformer and Conformer
  sizes (d_model 512, 8 heads, 8 layers for v1's sentence transformer and v2's Conformer), the
  dropout rates, the LayerScale initial value (0.1) and up to 3 co-located sensors per location
  (Neuromag triplets).
- ``"small"``: about 1 M parameters, trains on 2 CPU cores in minutes on a simulated session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bci_app.typing.alphabet import N_CLASSES
from models.config import ConfigMixin

#: Index of the CTC blank in v2's output (after the 29 typing classes).
BLANK_INDEX = N_CLASSES
#: Number of v2 outputs: the 29 typing classes plus the CTC blank.
N_CTC_OUTPUTS = N_CLASSES + 1
#: What v1's sentence transformer can be (:class:`Brain2QwertyV1Config` ``sentence``).
SENTENCE_KINDS = ("plain", "residual")


@dataclass(frozen=True)
class _Brain2QwertyConfig(ConfigMixin):
    """Fields shared by the Brain2Qwerty configs: signal, conv front end, sequence model."""

    # signal
    sfreq: float = 50.0
    # spatial attention
    spatial_channels: int = 270
    fourier_harmonics: int = 32
    spatial_dropout_radius: float = 0.2
    max_colocated: int = 3
    # convolutional front end
    hidden: int = 320
    n_conv_layers: int = 15
    conv_dropout: float = 0.2
    layer_scale_init: float = 0.1
    # sequence model (v1: transformer over keystrokes; v2: Conformer over frames)
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 8
    ff_mult: int = 4
    seq_dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        positive = ("sfreq", "spatial_channels", "fourier_harmonics", "max_colocated", "hidden")
        positive += ("n_conv_layers", "d_model", "n_heads", "n_layers", "ff_mult")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"Invalid value for '{name}': must be > 0, got {getattr(self, name)}."
                )
        for name in ("spatial_dropout_radius", "conv_dropout", "seq_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"Invalid value for '{name}': must be in [0, 1), got {getattr(self, name)}."
                )
        if self.d_model % self.n_heads:
            raise ValueError(
                f"Invalid value for 'n_heads': d_model={self.d_model} is not divisible by "
                f"n_heads={self.n_heads}. Pick n_heads dividing d_model."
            )


_SMALL_FRONT_END = dict(
    spatial_channels=96,
    fourier_harmonics=12,
    hidden=128,
    n_conv_layers=6,
    conv_dropout=0.1,
    d_model=128,
    n_heads=4,
    n_layers=2,
)


@dataclass(frozen=True)
class Brain2QwertyV1Config(_Brain2QwertyConfig):
    """Brain2Qwerty v1: keystroke-locked windows -> conv module -> transformer over a sentence.

    Parameters
    ----------
    tmin, tmax : float
        Window around each keystroke in seconds; the window holds
        ``n_times = round((tmax - tmin) * sfreq)`` samples, ``[tmin, tmax)`` (25 at 50 Hz).
    causal : bool
        If True, each keystroke attends only to itself and earlier keystrokes, so a prediction
        never changes once made (live == offline by construction). The paper's transformer sees
        the whole sentence (False).
    sentence : {"plain", "residual"}
        What the sentence transformer reads and outputs. ``"plain"`` (the paper's, and every
        bundle made before the residual): the keystroke embeddings in, logits out.
        ``"residual"``: the conv head's log-posteriors in (computed inside the sentence module
        with the conv head's own weights), ``conv_logits + delta`` out, the layer that makes
        ``delta`` zero at initialisation: untrained, it equals conv only, and it can be
        pretrained on text (:mod:`models.typing.pretrain`).
    sentence_embeddings : bool
        ``"residual"`` only: the transformer reads the keystroke embeddings too (added to the
        posteriors' projection, after ``embedding_dropout``).
    embedding_dropout : float
        Dropout on the embeddings the residual transformer reads (whole keystrokes at a time).
    sentence_local : int
        Kernel (keystrokes, odd) of a depthwise convolution over neighbouring keystrokes
        before the transformer layers (0: none; a Conformer-style module: gated pointwise,
        depthwise, pointwise, residual). Spelling is local: with sinusoidal positions only, the
        small transformer could not find "the key before" among a sentence's keys and barely
        changed conv only's argmax; a kernel of 9 cut the text-denoising loss 1.50 -> 1.30 for
        0.07 ms more per sentence-graph run (docs/BENCHMARKS.md). Causal models pad on the
        left only.
    """

    tmin: float = -0.2
    tmax: float = 0.3
    causal: bool = False
    sentence: str = "plain"
    sentence_embeddings: bool = False
    embedding_dropout: float = 0.5
    sentence_local: int = 0

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"sentence": "residual"},
        "small": dict(_SMALL_FRONT_END, seq_dropout=0.1, sentence="residual", sentence_local=9),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sentence_local < 0 or (self.sentence_local and self.sentence_local % 2 == 0):
            raise ValueError(
                f"Invalid value for 'sentence_local': must be 0 (none) or a positive odd "
                f"kernel, got {self.sentence_local}."
            )
        if self.tmax <= self.tmin:
            raise ValueError(
                f"Invalid window: tmax={self.tmax} must be greater than tmin={self.tmin} (seconds)."
            )
        if self.n_times < 1:
            raise ValueError(
                f"Invalid window: ({self.tmax} - {self.tmin}) s at {self.sfreq} Hz holds no sample."
            )
        if self.sentence not in SENTENCE_KINDS:
            raise ValueError(
                f"Invalid value for 'sentence': {self.sentence!r}; use one of {SENTENCE_KINDS}."
            )
        if not 0.0 <= self.embedding_dropout < 1.0:
            raise ValueError(
                f"Invalid value for 'embedding_dropout': must be in [0, 1), got "
                f"{self.embedding_dropout}."
            )

    @property
    def n_times(self) -> int:
        """Samples per keystroke window: ``round((tmax - tmin) * sfreq)``."""
        return round((self.tmax - self.tmin) * self.sfreq)


@dataclass(frozen=True)
class Brain2QwertyV2Config(_Brain2QwertyConfig):
    """Brain2Qwerty v2: continuous data -> conv front end -> strided conv -> Conformer -> CTC.

    Parameters
    ----------
    frame_stride : int
        Stride (samples) of the convolution that makes frames: 2 at 50 Hz gives 40 ms frames.
    conv_kernel : int
        Kernel of the Conformer's depthwise convolution (odd, in frames).
    """

    frame_stride: int = 2
    conv_kernel: int = 15

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "small": dict(_SMALL_FRONT_END, conv_kernel=7),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frame_stride < 1:
            raise ValueError(
                f"Invalid value for 'frame_stride': must be >= 1, got {self.frame_stride}."
            )
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(
                f"Invalid value for 'conv_kernel': must be a positive odd number, got "
                f"{self.conv_kernel}."
            )

    @property
    def frame_s(self) -> float:
        """Duration of one output frame in seconds (``frame_stride / sfreq``)."""
        return self.frame_stride / self.sfreq
