"""Building blocks of the Brain2Qwerty decoders: sensor positions, spatial attention, conv blocks.

Tensors are ``(batch, channels, time)`` in the convolutional parts and ``(batch, time, features)``
in the sequence parts. Every block takes tensors only and exports to ONNX with the dynamo exporter.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: Distance (in normalised 2D units) under which two sensors count as co-located.
COLOCATED_TOL = 1e-4


def positions_to_2d(positions_3d: np.ndarray | Tensor) -> np.ndarray:
    """Project 3D sensor positions onto a 2D map in ``[0, 1]``, seen from the top of the head.

    Azimuthal equidistant projection around the centre of the sphere that best fits the sensors
    (least squares): a sensor's distance from the map centre is its polar angle from the vertex, its
    direction the azimuth. Both axes share one scale, so the map keeps its shape; its bounding box
    starts at 0 and its longer side spans [0, 1]. Sensors that do not span 3D (a flat grid) fall
    back to the orthographic view from above (x, y). Co-located sensors (MEG magnetometer and
    gradiometers) stay co-located.

    Parameters
    ----------
    positions_3d : array, shape (n_chans, 3)
        Positions in a head frame (x right, y front, z up), any unit (MNE: metres).

    Returns
    -------
    positions_2d : array, shape (n_chans, 2)
        Float32 map coordinates in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the shape is wrong or a channel has no position (NaN/inf): the spatial attention needs a
        position for every channel, so pick the channels that have one or set a montage.
    """
    pos = np.asarray(positions_3d, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 1:
        raise ValueError(
            f"Invalid shape for 'positions_3d': expected (n_chans, 3), got {pos.shape}. Give one "
            "x, y, z position per channel."
        )
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        raise ValueError(
            f"Invalid value for 'positions_3d': channels {bad.tolist()} have no position (NaN or "
            "inf). The spatial attention needs a position for every channel: set a montage (e.g. "
            "mne's set_montage) or drop those channels."
        )
    centred = pos - pos.mean(axis=0)
    if (
        pos.shape[0] < 4
        or np.linalg.matrix_rank(centred, tol=1e-6 * np.abs(centred).max() + 1e-12) < 3
    ):
        flat = pos[:, :2]
    else:
        # Sphere fit: |p|^2 = 2 c.p + (r^2 - |c|^2), linear in (c, r^2 - |c|^2).
        design = np.column_stack([2 * pos, np.ones(len(pos))])
        solution = np.linalg.lstsq(design, (pos**2).sum(axis=1), rcond=None)[0]
        rel = pos - solution[:3]
        radius = np.linalg.norm(rel, axis=1)
        polar = np.arccos(np.clip(rel[:, 2] / np.maximum(radius, 1e-12), -1.0, 1.0))
        azimuth = np.arctan2(rel[:, 1], rel[:, 0])
        flat = np.column_stack([polar * np.cos(azimuth), polar * np.sin(azimuth)])
    flat = flat - flat.min(axis=0)
    span = flat.max()
    if span > 0:
        flat = flat / span
    return flat.astype(np.float32)


def as_positions_2d(positions: np.ndarray | Tensor, n_chans: int) -> Tensor:
    """Return float32 2D positions ``(n_chans, 2)``; 3D positions are projected first."""
    pos = (
        positions.detach().cpu().numpy() if isinstance(positions, Tensor) else np.asarray(positions)
    )
    if pos.ndim != 2 or pos.shape[0] != n_chans or pos.shape[1] not in (2, 3):
        raise ValueError(
            f"Invalid shape for 'positions': expected ({n_chans}, 2) or ({n_chans}, 3) for "
            f"{n_chans=}, got {pos.shape}. Give one position per channel, in channel order."
        )
    if pos.shape[1] == 3:
        pos = positions_to_2d(pos)
    if not np.isfinite(pos).all() or pos.min() < -1e-6 or pos.max() > 1 + 1e-6:
        raise ValueError(
            "Invalid value for 'positions': 2D positions must be finite and in [0, 1], got range "
            f"[{np.nanmin(pos):.3g}, {np.nanmax(pos):.3g}]. Use positions_to_2d(positions_3d)."
        )
    return torch.as_tensor(pos, dtype=torch.float32)


def colocated_groups(positions_2d: Tensor, tol: float = COLOCATED_TOL) -> Tensor:
    """Rank of each sensor among the sensors at its location, in channel order.

    Neuromag MEG has a magnetometer and two gradiometers at each location; giving each rank its own
    spatial-attention weights keeps them apart (the same rank is the same sensor kind when the
    channel order repeats per location, as in FIF files). EEG gives all zeros.
    """
    dist = torch.cdist(positions_2d.double(), positions_2d.double())
    same = dist <= tol
    earlier = torch.tril(torch.ones_like(same), diagonal=-1)
    return (same & earlier).sum(dim=1).long()


def fourier_features(positions: Tensor, harmonics: int, margin: float = 0.2) -> Tensor:
    """Fourier embedding of positions: cos and sin of ``2 pi (k . p) / (1 + margin)``.

    ``p`` is a position in the unit square (2D sensor maps) or cube (3D contacts); each
    component of ``k`` runs over ``0 .. harmonics - 1``. The period ``1 + margin`` keeps opposite
    edges apart. Returns shape ``(n_chans, 2 * harmonics**dims)``.
    """
    dims = positions.shape[1]
    freqs = torch.arange(harmonics, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[freqs] * dims, indexing="ij"), dim=-1).reshape(-1, dims)
    phase = 2 * math.pi * positions.double() @ grid.T / (1.0 + margin)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1).float()


class SpatialAttention(nn.Module):
    """Per-subject softmax attention over input sensors, driven by their positions.

    Output channel ``j`` of subject ``s`` is ``sum_i softmax_i(z[s, g_i, j] . phi(pos_i)) x_i``,
    with ``phi`` the Fourier embedding and ``g_i`` the sensor's co-located rank. Positions are 2D
    map coordinates in ``[0, 1]`` (:func:`as_positions_2d`) or 3D ones in ``[0, 1]^3``
    (:class:`models.speech.layers.SpatialAttention3D`). Weights do not depend on the montage, so
    a state dict moves between montages (positions are not saved in it). During training, all
    sensors within ``dropout_radius`` of a random point are dropped (one point per example); an
    example that would lose all its sensors keeps them.
    """

    def __init__(
        self,
        positions: Tensor,
        n_out: int,
        n_subjects: int,
        harmonics: int,
        dropout_radius: float,
        max_colocated: int,
    ) -> None:
        super().__init__()
        groups = colocated_groups(positions)
        n_groups = int(groups.max()) + 1
        if n_groups > max_colocated:
            raise ValueError(
                f"Invalid value for 'positions': {n_groups} sensors share one location but the "
                f"config allows max_colocated={max_colocated}. Raise max_colocated or give "
                "distinct positions."
            )
        order = torch.argsort(groups, stable=True)
        features = fourier_features(positions, harmonics)
        self.register_buffer("positions", positions.float().clone(), persistent=False)
        self.register_buffer("sorted_features", features[order], persistent=False)
        self.register_buffer("inverse_order", torch.argsort(order), persistent=False)
        self.group_sizes = torch.bincount(groups, minlength=n_groups).tolist()
        self.dropout_radius = dropout_radius
        self.n_subjects = n_subjects
        n_features = features.shape[1]
        self.weight = nn.Parameter(
            torch.randn(n_subjects, max_colocated, n_out, n_features) / math.sqrt(n_features)
        )

    def logits(self, subject: Tensor) -> Tensor:
        """Attention logits ``(batch, n_out, n_chans)`` of each example's subject."""
        weight = self.weight[subject]
        parts, start = [], 0
        for group, size in enumerate(self.group_sizes):
            features = self.sorted_features[start : start + size]
            parts.append(torch.matmul(weight[:, group], features.T))
            start += size
        return torch.cat(parts, dim=-1)[..., self.inverse_order]

    def dropout_mask(self, batch: int) -> Tensor:
        """Sensors to drop ``(batch, n_chans)``: those within the radius of a random point each.

        An example whose every sensor falls in the radius keeps them all.
        """
        centre = torch.rand(batch, 1, self.positions.shape[1], device=self.positions.device)
        dropped = (
            torch.linalg.vector_norm(self.positions[None] - centre, dim=-1) < self.dropout_radius
        )
        return dropped & ~dropped.all(dim=1, keepdim=True)

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """Mix ``(batch, n_chans, time)`` into ``(batch, n_out, time)``."""
        logits = self.logits(subject)
        if self.training and self.dropout_radius > 0:
            dropped = self.dropout_mask(x.shape[0])
            logits = logits.masked_fill(dropped[:, None, :], float("-inf"))
        return torch.matmul(torch.softmax(logits, dim=-1), x)

    @torch.no_grad()
    def frozen(self) -> FrozenSpatialAttention:
        """Return an inference copy holding each subject's precomputed attention matrix.

        In eval mode the attention does not depend on the data, so the live graph does one
        gather and one matmul instead of recomputing ``n_out x n_chans x n_features`` logits.
        """
        subjects = torch.arange(self.n_subjects, device=self.weight.device)
        return FrozenSpatialAttention(torch.softmax(self.logits(subjects), dim=-1))


class FrozenSpatialAttention(nn.Module):
    """Spatial attention with fixed per-subject matrices ``(n_subjects, n_out, n_chans)``."""

    def __init__(self, matrices: Tensor) -> None:
        super().__init__()
        self.register_buffer("matrices", matrices.detach().clone())

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """Mix ``(batch, n_chans, time)`` into ``(batch, n_out, time)``."""
        return torch.matmul(self.matrices[subject], x)


class SubjectLayer(nn.Module):
    """Per-subject linear map over channels, initialised to the identity."""

    def __init__(self, channels: int, n_subjects: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(channels).repeat(n_subjects, 1, 1))

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """Apply subject ``subject[b]``'s matrix to ``x[b]`` of shape ``(channels, time)``."""
        return torch.matmul(self.weight[subject], x)


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (starts small: blocks start near identity)."""

    def __init__(self, channels: int, init: float, channel_dim: int = 1) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init)))
        self.channel_dim = channel_dim

    def forward(self, x: Tensor) -> Tensor:
        """Scale ``x`` along its channel dimension."""
        shape = [1] * x.ndim
        shape[self.channel_dim] = -1
        return x * self.scale.view(shape)


class ResidualDilatedConv(nn.Module):
    """``x + LayerScale(Dropout(GELU(BatchNorm(Conv1d_k3_dilated(x)))))``, length-preserving."""

    def __init__(
        self, channels: int, dilation: int, dropout: float, layer_scale_init: float
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation)
        self.norm = nn.BatchNorm1d(channels)
        self.dropout = nn.Dropout(dropout)
        self.layer_scale = LayerScale(channels, layer_scale_init)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``(batch, channels, time)``."""
        branch = self.dropout(F.gelu(self.norm(self.conv(x))))
        return x + self.layer_scale(branch)


class AttentionPooling(nn.Module):
    """Softmax-weighted average over time: ``(batch, channels, time) -> (batch, channels)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv1d(channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x`` over its last dimension with learned, input-dependent weights."""
        weights = torch.softmax(self.score(x), dim=-1)
        return (x * weights).sum(dim=-1)


def sinusoidal_positions(length: int, dim: int, like: Tensor) -> Tensor:
    """Sinusoidal position encoding ``(length, dim)`` built in-graph (any length, no table)."""
    position = torch.arange(length, device=like.device, dtype=like.dtype)[:, None]
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, device=like.device, dtype=like.dtype) * (-math.log(10000.0) / dim)
    )
    angle = position * inv_freq
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).reshape(length, -1)[:, :dim]


class MultiHeadSelfAttention(nn.Module):
    """Self-attention on ``(batch, time, dim)`` with a boolean ``allowed`` mask (True = attend)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, allowed: Tensor | None) -> Tensor:
        """Attend over time; ``allowed`` broadcasts to ``(batch, heads, time, time)``."""
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.n_heads, dim // self.n_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, dropout_p=drop)
        return self.out(out.transpose(1, 2).reshape(batch, length, dim))


def feed_forward(dim: int, mult: int, dropout: float, activation: type[nn.Module]) -> nn.Sequential:
    """Pre-norm position-wise MLP ``dim -> mult * dim -> dim``."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, mult * dim),
        activation(),
        nn.Dropout(dropout),
        nn.Linear(mult * dim, dim),
        nn.Dropout(dropout),
    )


class TransformerLayer(nn.Module):
    """Pre-norm transformer encoder layer (self-attention, then GELU MLP), both residual."""

    def __init__(self, dim: int, n_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = MultiHeadSelfAttention(dim, n_heads, dropout)
        self.dropout = nn.Dropout(dropout)
        self.ff = feed_forward(dim, ff_mult, dropout, nn.GELU)

    def forward(self, x: Tensor, allowed: Tensor | None) -> Tensor:
        """Apply the layer to ``(batch, time, dim)``."""
        x = x + self.dropout(self.attention(self.norm(x), allowed))
        return x + self.ff(x)


class ConformerBlock(nn.Module):
    """Conformer block: half MLP, self-attention, convolution module, half MLP, LayerNorm.

    The convolution module is LayerNorm -> pointwise conv to 2*dim -> GLU -> depthwise conv ->
    BatchNorm -> SiLU -> pointwise conv -> dropout. Padded frames (``valid`` False) are zeroed
    before the depthwise convolution so they never leak into valid ones.
    """

    def __init__(self, dim: int, n_heads: int, ff_mult: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.ff_in = feed_forward(dim, ff_mult, dropout, nn.SiLU)
        self.norm_attention = nn.LayerNorm(dim)
        self.attention = MultiHeadSelfAttention(dim, n_heads, dropout)
        self.norm_conv = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.conv_norm = nn.BatchNorm1d(dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.ff_out = feed_forward(dim, ff_mult, dropout, nn.SiLU)
        self.norm_out = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor | None, valid: Tensor | None) -> Tensor:
        """Apply the block to ``(batch, frames, dim)``; ``valid`` is ``(batch, frames)`` or None."""
        x = x + 0.5 * self.ff_in(x)
        x = x + self.dropout(self.attention(self.norm_attention(x), allowed))
        conv = F.glu(self.pointwise_in(self.norm_conv(x).transpose(1, 2)), dim=1)
        if valid is not None:
            conv = conv * valid[:, None, :].to(conv.dtype)
        conv = self.pointwise_out(F.silu(self.conv_norm(self.depthwise(conv))))
        x = x + self.dropout(conv.transpose(1, 2))
        x = x + 0.5 * self.ff_out(x)
        return self.norm_out(x)
