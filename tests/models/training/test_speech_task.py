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


#: One short epoch on the 30 s EEG listening session, nothing exported.
ONE_EPOCH = dict(
    config="small", epochs=1, batch_size=8, seed=0, export=False, progress=False, device="cpu"
)


@pytest.fixture(scope="module")
def pretrained(listening_session, tmp_path_factory):
    """A one-epoch run (seed 1) with the linear anti-alias filter, its subject labelled ``p``."""
    out = tmp_path_factory.mktemp("pretrained") / "run"
    settings = {**ONE_EPOCH, "seed": 1}
    train_speech([listening_session], out, subject_ids=["p"], anti_alias="linear", **settings)
    return out


@pytest.mark.slow
def test_anti_alias_setting_reaches_the_preprocessing(pretrained, listening_session, tmp_path):
    meta = load_checkpoint(pretrained / "checkpoint.pt")["meta"]
    assert meta["preprocessing"]["anti_alias"] == "linear"
    assert meta["train"]["anti_alias"] == "linear"
    with pytest.raises(ValueError, match=r"'anti_alias': 'cubic'; use one of linear, minphase"):
        train_speech([listening_session], tmp_path / "bad", anti_alias="cubic", **ONE_EPOCH)


@pytest.mark.slow
def test_fine_tuning_starts_a_new_subject_from_the_pretrained_weights(
    pretrained, listening_session, tmp_path
):
    """``init``: the new subject (label 0) starts from the mean of the pretrained subjects."""
    tuned = train_speech([listening_session], tmp_path / "tuned", init=pretrained, **ONE_EPOCH)
    scratch = train_speech([listening_session], tmp_path / "scratch", **ONE_EPOCH)
    assert tuned["val_top10"] >= 0 and scratch["val_top10"] >= 0
    meta = load_checkpoint(tmp_path / "tuned" / "checkpoint.pt")["meta"]
    assert meta["init"]["subjects"] == ["p"] and meta["init"]["subjects_from"] == {"0": "mean"}
    weights = {
        run: load_checkpoint(path / "checkpoint.pt")["best_model"]
        for run, path in (
            ("pretrained", pretrained),
            ("tuned", tmp_path / "tuned"),
            ("scratch", tmp_path / "scratch"),
        )
    }
    # the scratch run starts from seed 0's random weights, the fine-tuned one from the pretrained
    # (seed 1) weights, and one epoch moves them a little
    key = next(k for k in weights["pretrained"] if "conv" in k and k.endswith("weight"))
    distance = {
        run: float((weights[run][key] - weights["pretrained"][key]).norm())
        for run in ("tuned", "scratch")
    }
    assert distance["tuned"] < 0.5 * distance["scratch"]
