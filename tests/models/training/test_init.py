"""Fine-tuning from a pretrained checkpoint (the ``init`` setting, ``train typing --init``)."""

from __future__ import annotations

import pytest
import torch
from helpers import typing_data as td

from acquisition.channels import ChannelSpec
from acquisition.io import write_recording
from bci_app.cli.train import main as train_main
from models.checkpoint import load_checkpoint, load_pretrained, subject_parameters
from models.registry import build_model, model_from_checkpoint


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, quick_typing):
    """Two epochs on two simulated subjects labelled "1" and "2" (the pretraining run)."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    sessions = [td.typing_session(subject=1), td.typing_session(subject=2, seed=2)]
    quick_typing(sessions, out, epochs=2, subject_ids=["1", "2"])
    return out / "checkpoint.pt"


def test_new_subject_starts_from_the_mean_and_the_rest_is_copied(pretrained):
    saved = load_checkpoint(pretrained)
    source = model_from_checkpoint(saved)
    weights = saved["best_model"]
    meta = {**saved["meta"], "subject_labels": ["2", "5"]}
    positions = ChannelSpec.from_dict(meta["channels"]).positions
    target = build_model(meta["arch"], meta["model_config"], meta["n_chans"], positions, 2)

    summary = load_pretrained(target, pretrained, meta)

    assert summary["subjects"] == ["1", "2"]
    assert summary["subjects_from"] == {"2": "2", "5": "mean"}
    per_subject = subject_parameters(target)
    assert len(per_subject) == 2  # the spatial attention heads and the subject layer
    state = target.state_dict()
    for key in per_subject:
        torch.testing.assert_close(state[key][0], weights[key][1])  # subject "2" keeps its own
        torch.testing.assert_close(state[key][1], weights[key].mean(dim=0))  # "5": the mean
    for key, value in source.state_dict().items():
        if key not in per_subject:
            torch.testing.assert_close(state[key], value, msg=key)


def test_training_with_init_records_where_it_started(pretrained, tmp_path, quick_typing):
    out = tmp_path / "tuned"
    quick_typing([td.typing_session(subject=5, seed=5)], out, epochs=1, init=str(pretrained))
    meta = load_checkpoint(out / "checkpoint.pt")["meta"]
    assert meta["train"]["init"] == str(pretrained)
    assert meta["provenance"]["init"]["subjects_from"] == {"0": "mean"}
    assert len(meta["provenance"]["init"]["sha256"]) == 64


def test_init_of_another_architecture_or_channel_set_is_refused(pretrained, tmp_path, quick_typing):
    session = td.typing_session(subject=5, seed=5)
    with pytest.raises(ValueError, match=r"'init'.*'brain2qwerty_v1' model but this run trains "):
        quick_typing([session], tmp_path / "v2", arch="v2", init=pretrained)
    names = list(session.channels.names[:32])
    with pytest.raises(ValueError, match=r"'init'.*trained on 64 channels \(eeg\) but these .* 32"):
        quick_typing([session], tmp_path / "picks", picks=names, init=pretrained)
    with pytest.raises(FileNotFoundError, match=r"'init'.*Give the checkpoint.pt"):
        quick_typing([session], tmp_path / "missing", init=tmp_path / "nothing")


def test_cli_init_error_is_one_line_with_exit_2(pretrained, tmp_path, capsys):
    recording = tmp_path / "session.xdf"
    write_recording(td.typing_session(subject=5, seed=5), recording)
    argv = ["typing", str(recording), "--out", str(tmp_path / "out"), "--arch", "v2"]
    code = train_main([*argv, "--init", str(pretrained), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "Invalid value for 'init'" in err and "or drop init" in err
