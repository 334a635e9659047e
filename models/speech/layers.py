"""3D spatial attention of the speech decoder, for intracranial contacts (sEEG, ECoG, DBS).

Scalp and helmet sensors lie on a shell and are mapped to 2D
(:func:`models.layers.positions_to_2d`); depth contacts do not, so their positions are scaled
into the unit cube and embedded with a 3D Fourier basis instead, and the same per-subject
softmax attention runs over them (:class:`SpatialAttention3D`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from models.layers import SpatialAttention


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


class SpatialAttention3D(SpatialAttention):
    """:class:`~models.layers.SpatialAttention` over 3D contact positions in ``[0, 1]^3``.

    Same per-subject softmax over sensors, co-located ranks and frozen export; the Fourier
    features span three axes (``2 * harmonics**3`` of them) and spatial dropout draws its centre
    in the cube.
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
        if positions_3d.ndim != 2 or positions_3d.shape[1] != 3:
            raise ValueError(
                f"Invalid shape for 'positions_3d': expected (n_chans, 3), got "
                f"{tuple(positions_3d.shape)}. Scale the contacts with positions_to_unit_cube."
            )
        super().__init__(positions_3d, n_out, n_subjects, harmonics, dropout_radius, max_colocated)
