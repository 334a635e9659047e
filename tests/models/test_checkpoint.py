"""Training checkpoints: corrupt and foreign files are refused, stale epochs are discarded."""

from __future__ import annotations

import argparse

import pytest
import torch

from models.bundles import export_checkpoint
from models.checkpoint import (
    discard_epochs_after,
    epoch_path,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)


def test_corrupt_or_foreign_checkpoints_are_refused(
    tmp_path, typing_run, typing_session, quick_typing
):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match=r"Corrupt or foreign checkpoint .*garbage\.pt"):
        load_checkpoint(garbage)
    whole = (typing_run[0] / "checkpoint.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"Corrupt or foreign checkpoint .*cut\.pt"):
        load_checkpoint(cut)
    pickled = tmp_path / "pickled.pt"
    torch.save(argparse.Namespace(payload=1), pickled)
    with pytest.raises(ValueError, match=r"weights_only=True.*arbitrary unpickling are refused"):
        load_checkpoint(pickled)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ValueError, match=r"Foreign checkpoint .*not a bci-app training"):
        export_checkpoint(foreign, tmp_path / "bundle")
    with pytest.raises(ValueError, match=r"Foreign checkpoint"):
        quick_typing([typing_session], tmp_path / "run", resume=foreign)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        quick_typing([typing_session], tmp_path / "run", resume=tmp_path / "missing.pt")


def test_a_new_run_discards_checkpoints_of_an_earlier_one(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for epoch in range(1, 6):
        save_checkpoint(epoch_path(tmp_path, epoch), {"epoch": epoch}, {"run": "old"})
    assert discard_epochs_after(tmp_path, 2) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    assert resolve_resume(tmp_path).name == "epoch_0002.pt"
    assert load_checkpoint(resolve_resume(tmp_path))["meta"] == {"run": "old"}
