"""Training typing decoders: loss, per-epoch checkpoints and resume, the report and the bundle."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import typing_data as td

from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.manifest import Decoding, Subject
from bci_app.lm.model import CharNgramLM
from models.checkpoint import load_checkpoint, resolve_resume
from models.registry import model_from_checkpoint
from models.training import train_typing
from models.typing.data import build_typing_dataset


def _history(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoint.pt")["history"]


def test_training_reduces_the_loss_and_writes_checkpoints_and_report(typing_run, typing_session):
    out, metrics = typing_run
    history = _history(out)
    assert history["train_loss"][-1] < 0.8 * history["train_loss"][0]
    assert metrics["epochs_run"] == len(history["val_cer"]) == 3
    assert 1 <= metrics["best_epoch"] <= 3 and 0.0 <= metrics["test_cer"]
    assert metrics["n_windows"] == sum(len(t[1]) for t in td.ground_truth_keys(typing_session))
    assert metrics["n_dropped_invalid"] == 0 and "test_cer_conv" in metrics
    assert len(metrics["lm_fit"]["val_cer_by_weight"]) == 6  # the LM weight is fitted too
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch_0002.pt",
        "epoch_0003.pt",
    ]
    report = Path(metrics["paths"]["report"])
    assert {p.name for p in report.parent.iterdir()} == {
        "report.html",
        "learning_curves.png",
        "confusion.png",
        "sentence_cer.png",
    }
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 3 and "Test sentences" in page
    assert not (out / "manifest.json").exists()  # export=False


def test_resume_continues_from_the_saved_epoch(
    tmp_path, typing_run, typing_session, quick_typing, caplog
):
    full, _ = typing_run
    with caplog.at_level(logging.INFO, logger="models.training"):
        resume = full / "checkpoints" / "epoch_0002.pt"
        quick_typing([typing_session], tmp_path / "resumed", resume=resume, epochs=None)
    assert "Resuming after epoch 2 of 3" in caplog.text
    kept = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert kept == ["epoch_0003.pt"]
    before, after = _history(full), _history(tmp_path / "resumed")
    for key in ("train_loss", "val_loss", "val_cer", "lr"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, err_msg=key)
    # a folder resumes from its newest checkpoint
    assert (
        resolve_resume(full)
        == resolve_resume(full / "checkpoints")
        == resume.with_name("epoch_0003.pt")
    )


def test_resume_refuses_other_settings_or_other_data(
    tmp_path, typing_run, typing_session, quick_typing
):
    checkpoint = typing_run[0] / "checkpoint.pt"
    with pytest.raises(ValueError, match=r"epochs=5 \(checkpoint: 3\) differ from the checkpoint"):
        quick_typing([typing_session], tmp_path / "x", resume=checkpoint, epochs=5)
    with pytest.raises(ValueError, match=r"trained on other data \(\d+ sentences"):
        quick_typing([td.typing_session(seed=2)], tmp_path / "x", resume=checkpoint, epochs=None)


def test_invalid_settings_are_named(tmp_path, typing_session, quick_typing):
    with pytest.raises(ValueError, match=r"Invalid value for 'arch': 'v3'"):
        quick_typing([typing_session], tmp_path / "x", arch="v3")
    with pytest.raises(ValueError, match=r"Invalid value for 'epochs': 0"):
        quick_typing([typing_session], tmp_path / "x", epochs=0)
    with pytest.raises(ValueError, match=r"Invalid value for 'lr': 2"):
        quick_typing([typing_session], tmp_path / "x", lr=2)
    with pytest.raises(ValueError, match=r"unknown preset 'huge'"):
        quick_typing([typing_session], tmp_path / "x", config="huge")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, typing_session):
    with pytest.raises(ValueError, match=r"'cuda' but torch sees no CUDA device.*--device cpu"):
        train_typing([typing_session], tmp_path / "x", device="cuda")


def test_v2_trains_with_ctc_on_continuous_sentences(tmp_path, typing_session, quick_typing):
    metrics = quick_typing([typing_session], tmp_path / "v2", arch="v2", epochs=2)
    history = _history(tmp_path / "v2")
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert metrics["cer_kind"] == "greedy CTC" and "test_cer_conv" not in metrics
    meta = load_checkpoint(tmp_path / "v2" / "checkpoint.pt")["meta"]
    assert meta["arch"] == "brain2qwerty_v2" and meta["preprocessing"]["clamp"] == 5.0


@pytest.mark.slow
def test_bundle_loads_and_its_graphs_match_the_trained_model(
    tmp_path, typing_session, quick_typing
):
    out = tmp_path / "bundle"
    metrics = quick_typing([typing_session], out, epochs=2, export=True, name="tiny-eeg")
    bundle = load_bundle(out)
    manifest = bundle.manifest
    assert set(manifest.graphs) == {"keystroke", "sentence"} and bundle.task == "typing"
    assert manifest.name == "tiny-eeg" and manifest.arch == "brain2qwerty_v1"
    assert manifest.window.to_dict() == {
        "tmin": -0.2,
        "tmax": 0.3,
        "sfreq": 50.0,
        "baseline": [None, 0.0],
        "clamp": 5.0,
    }
    assert len(manifest.classes) == 29 and manifest.decoding == Decoding(top_k=5, beam_width=30)
    assert manifest.subject == Subject(n_subjects=1, default=0, labels=("0",))
    assert manifest.metrics["test_cer"] == metrics["test_cer"]
    assert manifest.provenance.recordings[0].simulator["seed"] == 1
    assert bundle.check_stream(typing_session.channels, typing_session.sfreq) == list(range(64))
    assert CharNgramLM.load(bundle.file_path(manifest.lm.file)).order == 6
    assert manifest.lm.weight == metrics["lm_fit"]["weight"]  # fitted on validation sentences
    dataset = build_typing_dataset([typing_session])
    assert manifest.preprocessing.scaler_center == dataset.preprocessing.scaler_center

    model = model_from_checkpoint(load_checkpoint(out / "checkpoint.pt"))
    windows = dataset.sentences[0].windows
    subject = np.zeros(len(windows), dtype=np.int64)
    keystroke = ort.InferenceSession(str(bundle.graph_path("keystroke")))
    embedding, conv_logits = keystroke.run(None, {"x": windows, "subject": subject})
    with torch.no_grad():
        expected = model.classify_keystrokes(torch.from_numpy(windows), torch.from_numpy(subject))
        sentence_logits = model(
            torch.from_numpy(windows)[None],
            torch.zeros(1, dtype=torch.long),
            torch.ones(1, len(windows), dtype=torch.bool),
        )
    np.testing.assert_allclose(conv_logits, expected.numpy(), atol=1e-4)
    sentence = ort.InferenceSession(str(bundle.graph_path("sentence")))
    (logits,) = sentence.run(
        None, {"embeddings": embedding[None], "key_mask": np.ones((1, len(windows)), bool)}
    )
    np.testing.assert_allclose(logits, sentence_logits.numpy(), atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~40 s on 2 idle cores; minutes when the cores are shared
def test_small_decodes_simulated_meg_well_below_chance(tmp_path, quick_typing):
    recording = td.typing_session("meg", seed=3, duration=150.0, snr=3.0)
    metrics = quick_typing([recording], tmp_path / "meg", epochs=40, batch_size=2, picks=["mag"])
    print(
        f"\nsmall on 150 s of simulated MEG (102 magnetometers, snr 3): test CER "
        f"{metrics['test_cer']:.3f} "
        f"(conv only {metrics['test_cer_conv']:.3f}), chance {metrics['test_cer_chance']:.3f}, "
        f"{metrics['n_sentences']} sentences, {metrics['epochs_run']} epochs in "
        f"{metrics['train_seconds']:.0f} s"
    )
    assert metrics["test_cer_conv"] < 0.6 * metrics["test_cer_chance"]
    assert metrics["test_cer"] < 0.6 * metrics["test_cer_chance"]


def test_the_bundle_records_which_sentences_it_was_trained_on(typing_run, typing_session):
    from acquisition.simulator import sentence_key

    meta = load_checkpoint(typing_run[0] / "checkpoint.pt")["meta"]
    shown = {s["text"] for s in typing_session.meta["ground_truth"]["sentences"]}
    assert meta["provenance"]["training_sentences"] == sorted(sentence_key(t) for t in shown)
