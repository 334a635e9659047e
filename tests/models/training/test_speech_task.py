"""Training the speech decoder: a resumed run repeats the uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest

from models.checkpoint import load_checkpoint
from models.training import train_speech


@pytest.mark.slow
def test_resume_continues_a_run_exactly(listening_session, tmp_path):
    """Resumed from its epoch-2 checkpoint, a run reproduces the uninterrupted run's history."""
    kwargs = dict(export=False, progress=False)
    whole = train_speech(
        [listening_session],
        tmp_path / "whole",
        config="small",
        epochs=3,
        batch_size=8,
        seed=0,
        patience=10,
        **kwargs,
    )
    resume = tmp_path / "whole" / "checkpoints" / "epoch_0002.pt"
    resumed = train_speech([listening_session], tmp_path / "resumed", resume=resume, **kwargs)
    history = {
        run: load_checkpoint(tmp_path / run / "checkpoints" / "epoch_0003.pt")["history"]
        for run in ("whole", "resumed")
    }
    assert len(history["whole"]["val_loss"]) == 3
    assert {"train_loss", "val_loss", "val_top1", "val_top10", "lr"} <= set(history["whole"])
    for key, values in history["whole"].items():
        if key != "seconds":  # wall-clock time per epoch, the one entry that may differ
            np.testing.assert_allclose(history["resumed"][key], values, rtol=1e-5, atol=1e-6)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-5)
    assert resumed["best_epoch"] == whole["best_epoch"]
