"""Brain2Qwerty typing decoders: v1 (keystroke-locked, conv + transformer) and v2 (CTC).

Both share a convolutional front end: spatial attention over 2D sensor positions -> 1x1 conv ->
subject layer -> residual dilated conv blocks. v1 pools each keystroke window to one embedding,
classifies it alone (the "conv only" head) and, through a transformer over a sentence's keystrokes,
in context. v2 reads continuous data, makes ~40 ms frames with a strided conv, runs a Conformer and
emits CTC log-probabilities over the 29 classes plus a blank (index 29).

For live decoding each model lists its ONNX graphs (:meth:`Brain2QwertyV1.export_graphs`): v1 has
a per-keystroke graph (window -> embedding, conv-only logits) and a sentence graph (embeddings so
far -> logits, dynamic number of keystrokes); v2 has one graph with dynamic time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bci_app.typing.alphabet import N_CLASSES
from models.checks import check_continuous, check_float32, check_subject
from models.export import ExportGraph
from models.layers import (
    AttentionPooling,
    ConformerBlock,
    ResidualDilatedConv,
    SpatialAttention,
    SubjectLayer,
    TransformerLayer,
    as_positions_2d,
    sinusoidal_positions,
)
from models.typing.config import N_CTC_OUTPUTS, Brain2QwertyV1Config, Brain2QwertyV2Config

_DILATIONS = (1, 2, 4)


def check_windows(x: Tensor, n_chans: int, config: Brain2QwertyV1Config) -> None:
    """Raise ValueError unless ``x`` is ``(..., n_chans, n_times)`` float32 keystroke windows."""
    if x.ndim < 3:
        raise ValueError(
            f"Invalid shape for 'x': expected (batch, n_chans, n_times), got {tuple(x.shape)}."
        )
    if x.shape[-2] != n_chans:
        raise ValueError(
            f"n_chans={x.shape[-2]} different from the decoder's n_chans={n_chans}. Pick the "
            "channels the decoder was trained on, in the same order."
        )
    n_times = x.shape[-1]
    if n_times != config.n_times:
        raise ValueError(
            f"{n_times=} different from (tmax - tmin) * sfreq = ({config.tmax} - {config.tmin}) "
            f"* {config.sfreq} = {config.n_times}. Cut keystroke windows of the decoder's length "
            "at its sampling rate."
        )
    check_float32(x)


class ConvFrontEnd(nn.Module):
    """Spatial attention -> 1x1 conv -> subject layer -> residual dilated convs (length kept)."""

    def __init__(
        self,
        n_chans: int,
        positions: np.ndarray | Tensor,
        n_subjects: int,
        config: Brain2QwertyV1Config | Brain2QwertyV2Config,
    ) -> None:
        super().__init__()
        if n_chans < 1 or n_subjects < 1:
            raise ValueError(
                f"Invalid value for 'n_chans'/'n_subjects': both must be >= 1, got {n_chans=}, "
                f"{n_subjects=}."
            )
        self.n_chans, self.n_subjects = n_chans, n_subjects
        self.spatial = SpatialAttention(
            as_positions_2d(positions, n_chans),
            config.spatial_channels,
            n_subjects,
            config.fourier_harmonics,
            config.spatial_dropout_radius,
            config.max_colocated,
        )
        self.pointwise = nn.Conv1d(config.spatial_channels, config.hidden, 1)
        self.subject_layer = SubjectLayer(config.hidden, n_subjects)
        self.blocks = nn.ModuleList(
            ResidualDilatedConv(
                config.hidden,
                _DILATIONS[i % len(_DILATIONS)],
                config.conv_dropout,
                config.layer_scale_init,
            )
            for i in range(config.n_conv_layers)
        )

    def forward(self, x: Tensor, subject: Tensor, valid: Tensor | None = None) -> Tensor:
        """Map ``(batch, n_chans, time)`` to ``(batch, hidden, time)``.

        ``valid`` (bool, ``(batch, time)``): samples past the end of a padded example are zeroed
        after every layer, so valid outputs equal those of the unpadded example (in eval mode).
        """
        return _run_front_end(self, x, subject, valid)


def _run_front_end(
    front_end: nn.Module, x: Tensor, subject: Tensor, valid: Tensor | None
) -> Tensor:
    """The front end's computation, shared by :class:`ConvFrontEnd` and its frozen export view."""
    mask = None if valid is None else valid[:, None, :].to(x.dtype)
    x = front_end.subject_layer(front_end.pointwise(front_end.spatial(x, subject)), subject)
    for block in front_end.blocks:
        x = block(x if mask is None else x * mask)
    return x if mask is None else x * mask


class _Frozen(nn.Module):
    """Export view of a :class:`ConvFrontEnd` whose spatial attention is optionally frozen."""

    def __init__(self, front_end: ConvFrontEnd, freeze_spatial: bool) -> None:
        super().__init__()
        self.spatial = front_end.spatial.frozen() if freeze_spatial else front_end.spatial
        self.pointwise, self.subject_layer = front_end.pointwise, front_end.subject_layer
        self.blocks = front_end.blocks

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """Same computation as :meth:`ConvFrontEnd.forward` (no padding)."""
        return _run_front_end(self, x, subject, None)


class KeystrokeEncoder(nn.Module):
    """v1's conv module: keystroke windows ``(batch, n_chans, n_times)`` -> ``(batch, hidden)``."""

    def __init__(
        self,
        n_chans: int,
        positions: np.ndarray | Tensor,
        n_subjects: int,
        config: Brain2QwertyV1Config,
    ) -> None:
        super().__init__()
        self.n_chans, self.n_subjects, self.config = n_chans, n_subjects, config
        self.front_end = ConvFrontEnd(n_chans, positions, n_subjects, config)
        self.pooling = AttentionPooling(config.hidden)

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """Embed each window (front end, then attention pooling over time)."""
        check_windows(x, self.n_chans, self.config)
        check_subject(subject, x.shape[0], self.n_subjects)
        return self.pooling(self.front_end(x, subject))


class Brain2QwertyV1(nn.Module):
    """Brain2Qwerty v1: per-keystroke conv encoder, conv-only head and sentence transformer.

    Parameters
    ----------
    n_chans : int
        Number of input channels (fixed).
    positions : array, shape (n_chans, 2) or (n_chans, 3)
        2D positions in [0, 1], or 3D head-frame positions projected by
        :func:`models.layers.positions_to_2d`. Every channel needs one.
    n_subjects : int
        Number of subjects (per-subject spatial heads and subject layer).
    config : Brain2QwertyV1Config
        Sizes, ``sfreq`` and window; ``n_times = config.n_times`` samples per keystroke.
    """

    def __init__(
        self,
        n_chans: int,
        positions: np.ndarray | Tensor,
        n_subjects: int,
        config: Brain2QwertyV1Config,
    ) -> None:
        super().__init__()
        self.config = config
        self.n_chans, self.n_subjects = n_chans, n_subjects
        self.sfreq, self.n_times = config.sfreq, config.n_times
        self.encoder = KeystrokeEncoder(n_chans, positions, n_subjects, config)
        self.conv_head = nn.Sequential(
            nn.LayerNorm(config.hidden),
            nn.Dropout(config.seq_dropout),
            nn.Linear(config.hidden, N_CLASSES),
        )
        self.sentence = SentenceTransformer(config, self.conv_head)

    @property
    def embedding_dim(self) -> int:
        """Size of one keystroke embedding (the conv encoder's output)."""
        return self.config.hidden

    def check_windows(self, x: Tensor) -> None:
        """Raise ValueError unless ``x`` holds float32 ``(..., n_chans, n_times)`` windows."""
        check_windows(x, self.n_chans, self.config)

    def encode(self, x: Tensor, subject: Tensor) -> Tensor:
        """Embed keystroke windows ``(batch, n_chans, n_times)`` to ``(batch, embedding_dim)``."""
        return self.encoder(x, subject)

    def classify_keystrokes(self, x: Tensor, subject: Tensor) -> Tensor:
        """Conv-only logits ``(batch, 29)`` of keystroke windows ``(batch, n_chans, n_times)``."""
        return self.conv_head(self.encode(x, subject))

    def forward_all(self, x: Tensor, subject: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Conv-only and transformer logits, both ``(batch, n_keys, 29)``, for sentences.

        Parameters
        ----------
        x : tensor, shape (batch, n_keys, n_chans, n_times)
            Keystroke windows of each sentence, padded to ``n_keys``.
        subject : tensor of int64, shape (batch,)
        key_mask : tensor of bool, shape (batch, n_keys)
            True for real keystrokes, False for padding. Padded windows are not run through the
            conv encoder (they never enter BatchNorm statistics); their logits are meaningless.
        """
        if x.ndim != 4:
            raise ValueError(
                f"Invalid shape for 'x': expected (batch, n_keys, n_chans, n_times), got "
                f"{tuple(x.shape)}. Use classify_keystrokes() for single windows."
            )
        self.check_windows(x)
        batch, n_keys = x.shape[:2]
        check_subject(subject, batch, self.n_subjects)
        if key_mask.shape != (batch, n_keys) or key_mask.dtype != torch.bool:
            raise ValueError(
                f"Invalid value for 'key_mask': expected a bool tensor of shape "
                f"({batch}, {n_keys}), got {key_mask.dtype} of shape {tuple(key_mask.shape)}."
            )
        valid = key_mask.reshape(-1)
        windows = x.reshape(batch * n_keys, *x.shape[2:])[valid]
        subjects = subject[:, None].expand(batch, n_keys).reshape(-1)[valid]
        embedded = self.encoder.pooling(self.encoder.front_end(windows, subjects))
        embeddings = embedded.new_zeros(batch * n_keys, self.embedding_dim)
        embeddings[valid] = embedded
        embeddings = embeddings.reshape(batch, n_keys, -1)
        return self.conv_head(embeddings), self.sentence(embeddings, key_mask)

    def forward(self, x: Tensor, subject: Tensor, key_mask: Tensor) -> Tensor:
        """Transformer logits ``(batch, n_keys, 29)`` of sentences (see :meth:`forward_all`)."""
        return self.forward_all(x, subject, key_mask)[1]

    def export_graphs(self, batch: int = 2, freeze_spatial: bool = True) -> dict[str, ExportGraph]:
        """The two ONNX graphs of the live path, with example inputs and dynamic axes.

        ``keystroke``: ``x (batch, n_chans, n_times), subject (batch,) -> embedding (batch, d),
        conv_logits (batch, 29)``. ``sentence``: ``embeddings (batch, n_keys, d), key_mask
        (batch, n_keys) -> logits (batch, n_keys, 29)``, dynamic ``n_keys``. Live decoding runs the
        first once per keystroke and the second over the embeddings so far.
        """
        device = next(self.parameters()).device
        keystroke = KeystrokeGraph(self, freeze_spatial)
        n_keys = 5
        key_mask = torch.ones(batch, n_keys, dtype=torch.bool, device=device)
        key_mask[0, -2:] = False
        return {
            "keystroke": ExportGraph(
                module=keystroke,
                example_inputs=(
                    torch.randn(batch, self.n_chans, self.n_times, device=device),
                    torch.arange(batch, device=device) % self.n_subjects,
                ),
                input_names=("x", "subject"),
                output_names=("embedding", "conv_logits"),
                dynamic_axes={"x": {0: "batch"}, "subject": {0: "batch"}},
            ),
            "sentence": ExportGraph(
                module=self.sentence,
                example_inputs=(
                    torch.randn(batch, n_keys, self.embedding_dim, device=device),
                    key_mask,
                ),
                input_names=("embeddings", "key_mask"),
                output_names=("logits",),
                dynamic_axes={
                    "embeddings": {0: "batch", 1: "n_keys"},
                    "key_mask": {0: "batch", 1: "n_keys"},
                },
            ),
        }


class KeystrokeGraph(nn.Module):
    """Export view of v1's conv encoder: one window -> (embedding, conv-only logits)."""

    def __init__(self, model: Brain2QwertyV1, freeze_spatial: bool = True) -> None:
        super().__init__()
        self.n_chans, self.n_subjects, self.config = model.n_chans, model.n_subjects, model.config
        self.front_end = _Frozen(model.encoder.front_end, freeze_spatial)
        self.pooling, self.conv_head = model.encoder.pooling, model.conv_head

    def forward(self, x: Tensor, subject: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``embedding (batch, d)`` and ``conv_logits (batch, 29)``."""
        check_windows(x, self.n_chans, self.config)
        check_subject(subject, x.shape[0], self.n_subjects)
        embedding = self.pooling(self.front_end(x, subject))
        return embedding, self.conv_head(embedding)


class SentenceTransformer(nn.Module):
    """Transformer over a sentence's keystrokes -> per-keystroke logits (29 classes).

    ``config.sentence == "plain"``: it reads the keystroke embeddings. ``"residual"``: it reads
    the conv head's log-posteriors, computed here from the embeddings with ``conv_head`` (the
    model's own, shared), and returns ``conv_logits + delta``; ``delta``'s last layer starts at
    zero, so an untrained residual transformer is the conv-only head, and what it learns is a
    correction from context. Either way the graph is ``embeddings, key_mask -> logits``.
    """

    def __init__(self, config: Brain2QwertyV1Config, conv_head: nn.Module | None = None) -> None:
        super().__init__()
        self.causal = config.causal
        self.residual = config.sentence == "residual"
        self.embedding_dim = config.hidden
        if self.residual:
            if conv_head is None:
                raise ValueError(
                    "Invalid value for 'conv_head': a residual sentence transformer reads the "
                    "conv head's posteriors; pass the model's conv head."
                )
            self.conv_head = conv_head
            self.evidence = nn.Linear(N_CLASSES, config.d_model)
        self.input = None
        if not self.residual or config.sentence_embeddings:
            self.input = nn.Linear(config.hidden, config.d_model)
            # (batch, n_keys, d) seen as (N, C, L): Dropout1d drops whole keystrokes' embeddings
            self.embedding_dropout = nn.Dropout1d(config.embedding_dropout if self.residual else 0)
        self.local = None
        if config.sentence_local:
            # neighbouring keystrokes (a Conformer-style convolution module: gated pointwise,
            # depthwise over keystrokes, pointwise), residual; see Brain2QwertyV1Config
            d = config.d_model
            self.local_norm = nn.LayerNorm(d)
            self.local_in = nn.Linear(d, 2 * d)
            self.local = nn.Conv1d(d, d, config.sentence_local, groups=d)
            self.local_out = nn.Linear(d, d)
        self.layers = nn.ModuleList(
            TransformerLayer(config.d_model, config.n_heads, config.ff_mult, config.seq_dropout)
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, N_CLASSES)
        if self.residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, embeddings: Tensor, key_mask: Tensor) -> Tensor:
        """Map ``(batch, n_keys, d)`` embeddings and a ``(batch, n_keys)`` bool mask to logits.

        Real keystrokes (mask True) attend to real keystrokes only (and, if causal, earlier
        ones); every keystroke may attend to itself, so an all-padding row stays finite.
        """
        if embeddings.ndim != 3 or embeddings.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"Invalid shape for 'embeddings': expected (batch, n_keys, "
                f"{self.embedding_dim}), got {tuple(embeddings.shape)}."
            )
        self._check_mask(key_mask, embeddings.shape[:2])
        if not self.residual:
            return self.context(None, key_mask, embeddings)
        conv_logits = self.conv_head(embeddings)
        return conv_logits + self.context(conv_logits, key_mask, embeddings)

    def _check_mask(self, key_mask: Tensor, shape: tuple[int, ...]) -> None:
        if key_mask.dtype != torch.bool or key_mask.shape != shape:
            raise ValueError(
                f"Invalid value for 'key_mask': expected a bool tensor of shape "
                f"{tuple(shape)}, got {key_mask.dtype} of shape {tuple(key_mask.shape)}."
            )

    def context(
        self, conv_logits: Tensor | None, key_mask: Tensor, embeddings: Tensor | None = None
    ) -> Tensor:
        """The transformer's output ``(batch, n_keys, 29)`` (residual: ``delta``).

        ``conv_logits`` (residual; log-softmaxed here) and/or ``embeddings`` are what it reads;
        text pretraining (:mod:`models.typing.pretrain`) calls it with simulated conv logits and
        no embeddings.
        """
        x = None
        if self.residual:
            x = self.evidence(torch.log_softmax(conv_logits, dim=-1))
        if self.input is not None and embeddings is not None:
            embedded = self.input(self.embedding_dropout(embeddings))
            x = embedded if x is None else x + embedded
        n_keys = x.shape[1]
        x = x + sinusoidal_positions(n_keys, x.shape[-1], x)
        if self.local is not None:
            x = x + self._neighbours(x, key_mask)
        index = torch.arange(n_keys, device=x.device)
        allowed = key_mask[:, None, None, :] | (index[:, None] == index[None, :])
        if self.causal:
            allowed = allowed & (index[None, :] <= index[:, None])
        for layer in self.layers:
            x = layer(x, allowed)
        return self.head(self.norm(x))

    def _neighbours(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """The local convolution's term: padded keystrokes read as zeros, length kept."""
        kernel = self.local.kernel_size[0]
        left = kernel - 1 if self.causal else kernel // 2
        h = F.glu(self.local_in(self.local_norm(x)), dim=-1) * key_mask[..., None].to(x.dtype)
        h = F.pad(h.transpose(1, 2), (left, kernel - 1 - left))
        return self.local_out(F.gelu(self.local(h).transpose(1, 2)))


class CTCBackEnd(nn.Module):
    """v2 after the front end: strided conv to frames -> Conformer -> CTC log-probs."""

    def __init__(self, config: Brain2QwertyV2Config) -> None:
        super().__init__()
        self.stride = stride = config.frame_stride
        self.downsample = nn.Conv1d(
            config.hidden, config.d_model, 2 * stride - 1, stride=stride, padding=stride - 1
        )
        self.blocks = nn.ModuleList(
            ConformerBlock(
                config.d_model,
                config.n_heads,
                config.ff_mult,
                config.conv_kernel,
                config.seq_dropout,
            )
            for _ in range(config.n_layers)
        )
        self.head = nn.Linear(config.d_model, N_CTC_OUTPUTS)

    def output_lengths(self, n_times: Tensor) -> Tensor:
        """Valid frames for ``n_times`` valid samples: ``ceil(n_times / stride)``."""
        return torch.div(n_times + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Map front-end features ``(batch, hidden, n_times)`` to ``(batch, n_frames, 30)``."""
        frames = self.downsample(features).transpose(1, 2)
        n_frames = frames.shape[1]
        frames = frames + sinusoidal_positions(n_frames, frames.shape[-1], frames)
        allowed = valid = None
        if lengths is not None:
            index = torch.arange(n_frames, device=frames.device)
            valid = index[None, :] < self.output_lengths(lengths)[:, None]
            allowed = valid[:, None, None, :] | (index[:, None] == index[None, :])
        for block in self.blocks:
            frames = block(frames, allowed, valid)
        return torch.log_softmax(self.head(frames), dim=-1)


class Brain2QwertyV2(nn.Module):
    """Brain2Qwerty v2: continuous data -> frames -> Conformer -> CTC log-probs (blank = 29).

    Parameters are those of :class:`Brain2QwertyV1` with a :class:`Brain2QwertyV2Config`; the input
    length is free and ``n_frames = ceil(n_times / frame_stride)`` (40 ms frames at 50 Hz).
    """

    def __init__(
        self,
        n_chans: int,
        positions: np.ndarray | Tensor,
        n_subjects: int,
        config: Brain2QwertyV2Config,
    ) -> None:
        super().__init__()
        self.config = config
        self.n_chans, self.n_subjects, self.sfreq = n_chans, n_subjects, config.sfreq
        self.front_end = ConvFrontEnd(n_chans, positions, n_subjects, config)
        self.back_end = CTCBackEnd(config)

    def output_lengths(self, n_times: Tensor) -> Tensor:
        """Number of valid frames for inputs of ``n_times`` valid samples (CTC input lengths)."""
        return self.back_end.output_lengths(n_times)

    def forward(self, x: Tensor, subject: Tensor, lengths: Tensor | None = None) -> Tensor:
        """CTC log-probabilities ``(batch, n_frames, 30)`` of ``x (batch, n_chans, n_times)``.

        ``lengths`` (int64, ``(batch,)``): valid samples per example when a batch is padded at the
        end. Padding is masked everywhere (convolutions, attention), so in eval mode the valid
        frames (``output_lengths(lengths)``) equal those of each example run alone; in training,
        padded samples still enter BatchNorm statistics. None: all samples are valid.
        """
        check_continuous(x, self.n_chans)
        check_subject(subject, x.shape[0], self.n_subjects)
        if lengths is not None and (lengths.shape != subject.shape or lengths.dtype != torch.long):
            raise ValueError(
                f"Invalid value for 'lengths': expected an int64 tensor of shape "
                f"{tuple(subject.shape)}, got {lengths.dtype} of shape {tuple(lengths.shape)}."
            )
        valid = None
        if lengths is not None:
            valid = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
        return self.back_end(self.front_end(x, subject, valid), lengths)

    def export_graphs(self, batch: int = 2, freeze_spatial: bool = True) -> dict[str, ExportGraph]:
        """The one ONNX graph of v2: ``x (batch, n_chans, n_times), subject -> log_probs``."""
        device = next(self.parameters()).device
        n_times = 8 * self.config.frame_stride
        return {
            "ctc": ExportGraph(
                module=ContinuousGraph(self, freeze_spatial),
                example_inputs=(
                    torch.randn(batch, self.n_chans, n_times, device=device),
                    torch.arange(batch, device=device) % self.n_subjects,
                ),
                input_names=("x", "subject"),
                output_names=("log_probs",),
                dynamic_axes={"x": {0: "batch", 2: "n_times"}, "subject": {0: "batch"}},
            )
        }


class ContinuousGraph(nn.Module):
    """Export view of v2 (optionally with frozen spatial attention), no padding input."""

    def __init__(self, model: Brain2QwertyV2, freeze_spatial: bool = True) -> None:
        super().__init__()
        self.n_chans, self.n_subjects = model.n_chans, model.n_subjects
        self.front_end = _Frozen(model.front_end, freeze_spatial)
        self.back_end = model.back_end

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """Return CTC log-probs ``(batch, n_frames, 30)``."""
        check_continuous(x, self.n_chans)
        check_subject(subject, x.shape[0], self.n_subjects)
        return self.back_end(self.front_end(x, subject))
