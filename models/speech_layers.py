"""3D spatial attention of the speech decoder, for intracranial contacts (sEEG, ECoG, DBS).

Scalp and helmet sensors lie on a shell and are mapped to 2D
(:func:`models.layers.positions_to_2d`); depth contacts do not, so their positions are scaled
into the unit cube and embedded with a 3D Fourier basis instead, and the same per-subject
softmax attention runs over them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from models.layers import SpatialAttention, colocated_groups


def positions_to_unit_cube(positions: np.ndarray | Tensor, n_chans: int) -> Tensor:
    """Scale 3D positions into ``[0, 1]^3`` (one scale for all axes, so shapes are kept)."""
    pos = np.asarray(positions.detach().cpu() if isinstance(positions, Tensor) else positions)
    if pos.shape != (n_chans, 3) or not np.isfinite(pos).all():
        raise ValueError(
            f"Invalid value for 'positions': spatial_dims=3 needs finite 3D positions of shape "
            f"({n_chans}, 3), got shape {pos.shape}. Give the contacts' x, y, z positions, or "
            "use spatial_dims=2."
        )
    pos = pos - pos.min(axis=0)
    span = pos.max()
    return torch.as_tensor(pos / span if span > 0 else pos, dtype=torch.float32)


def fourier_features_3d(positions: Tensor, harmonics: int, margin: float = 0.2) -> Tensor:
    """3D Fourier embedding: cos and sin of ``2 pi (k x + l y + m z) / (1 + margin)``.

    Shape ``(n_chans, 2 * harmonics**3)``; the 2D embedding of :mod:`models.layers` in one more
    dimension, so depth electrodes keep their depth.
    """
    freqs = torch.arange(harmonics, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(freqs, freqs, freqs, indexing="ij"), -1).reshape(-1, 3)
    phase = 2 * math.pi * positions.double() @ grid.T / (1.0 + margin)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1).float()


class SpatialAttention3D(SpatialAttention):
    """:class:`~models.layers.SpatialAttention` over 3D positions in ``[0, 1]^3``.

    Same per-subject softmax over sensors, co-located ranks and frozen export; the features are
    :func:`fourier_features_3d` and spatial dropout draws its centre in the cube.
    """

    def __init__(
        self,
        positions_3d: Tensor,
        n_out: int,
        n_subjects: int,
        harmonics: int,
        dropout_radius: float,
        max_colocated: int,
    ) -> None:
        nn.Module.__init__(self)
        groups = colocated_groups(positions_3d)
        n_groups = int(groups.max()) + 1
        if n_groups > max_colocated:
            raise ValueError(
                f"Invalid value for 'positions': {n_groups} contacts share one location but the "
                f"config allows max_colocated={max_colocated}. Give distinct positions."
            )
        order = torch.argsort(groups, stable=True)
        features = fourier_features_3d(positions_3d, harmonics)
        self.register_buffer("positions", positions_3d.float().clone(), persistent=False)
        self.register_buffer("sorted_features", features[order], persistent=False)
        self.register_buffer("inverse_order", torch.argsort(order), persistent=False)
        self.group_sizes = torch.bincount(groups, minlength=n_groups).tolist()
        self.dropout_radius, self.n_subjects = dropout_radius, n_subjects
        n_features = features.shape[1]
        self.weight = nn.Parameter(
            torch.randn(n_subjects, max_colocated, n_out, n_features) / math.sqrt(n_features)
        )

    def dropout_mask(self, batch: int) -> Tensor:
        """Contacts within the radius of a random point of the cube (all kept if all fall in)."""
        centre = torch.rand(batch, 1, 3, device=self.positions.device)
        dropped = (
            torch.linalg.vector_norm(self.positions[None] - centre, dim=-1) < self.dropout_radius
        )
        return dropped & ~dropped.all(dim=1, keepdim=True)
