"""v1's residual sentence transformer and its text pretraining (issue 14)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from acquisition.simulator import Simulator
from bci_app.typing.alphabet import N_CLASSES
from models.export import export_model
from models.registry import build_model
from models.typing import pretrain
from models.typing.config import Brain2QwertyV1Config
from models.typing.data import build_typing_dataset
from models.typing.model import Brain2QwertyV1, SentenceTransformer

N_CHANS = 32
TINY = dict(spatial_channels=16, fourier_harmonics=4, hidden=32, n_conv_layers=3, d_model=32)
ROOT = Path(__file__).parents[2]
#: The last commit whose shipped typing bundle has the plain (pre-residual) sentence transformer.
OLD_BUNDLE_COMMIT = "a1d42899a7f55b6df4eeadbdc33419edf96a7062"
OLD_BUNDLE_FILES = ("manifest.json", "keystroke.onnx", "sentence.onnx", "lm.npz", "README.md")


def v1(positions, **overrides) -> Brain2QwertyV1:
    config = dataclasses.replace(Brain2QwertyV1Config.named("small"), **overrides)
    return Brain2QwertyV1(N_CHANS, positions, 2, config)


def test_residual_transformer_is_conv_only_until_trained(positions):
    model = v1(positions).eval()
    assert model.config.sentence == "residual"
    x = torch.randn(2, 6, N_CHANS, model.n_times)
    conv, sentence = model.forward_all(x, torch.tensor([0, 1]), torch.ones(2, 6, dtype=torch.bool))
    torch.testing.assert_close(sentence, conv, rtol=0, atol=0)
    with torch.no_grad():  # once its last layer moves, context changes the logits
        torch.nn.init.normal_(model.sentence.head.weight, std=0.1)
    _, sentence = model.forward_all(x, torch.tensor([0, 1]), torch.ones(2, 6, dtype=torch.bool))
    assert (sentence - conv).abs().max() > 1e-3


@pytest.mark.parametrize("embeddings", [False, True])
def test_residual_sentence_graph_has_the_plain_graphs_interface(positions, tmp_path, embeddings):
    """Live decoding feeds ``embeddings, key_mask`` and reads ``logits``, whatever the kind."""
    import onnxruntime as ort

    graphs = {}
    for kind in ("plain", "residual"):
        model = v1(positions, sentence=kind, sentence_embeddings=embeddings).eval()
        torch.nn.init.normal_(model.sentence.head.weight, std=0.1)
        report = export_model(model, tmp_path / kind)["sentence"]
        graph = onnx.load(report["path"]).graph
        graphs[kind] = (
            [(i.name, i.type.tensor_type.elem_type) for i in graph.input],
            [(o.name, o.type.tensor_type.elem_type) for o in graph.output],
        )
        session = ort.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
        embeddings_in = np.random.default_rng(0).normal(size=(1, 9, 128)).astype(np.float32)
        mask = np.ones((1, 9), bool)
        (logits,) = session.run(None, {"embeddings": embeddings_in, "key_mask": mask})
        with torch.no_grad():
            expected = model.sentence(torch.from_numpy(embeddings_in), torch.from_numpy(mask))
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
    assert graphs["residual"] == graphs["plain"]
    assert [name for name, _ in graphs["plain"][0]] == ["embeddings", "key_mask"]


def test_checkpoints_made_before_the_residual_rebuild_as_plain(positions):
    """A checkpoint's config without the new keys is the plain transformer its weights fit."""
    old = v1(positions, sentence="plain")
    config = old.config.to_dict()
    for key in ("sentence", "sentence_embeddings", "embedding_dropout"):
        config.pop(key)  # what a checkpoint written before these fields holds
    rebuilt = build_model("brain2qwerty_v1", config, N_CHANS, positions, 2)
    rebuilt.load_state_dict(old.state_dict())  # as model_from_checkpoint does: strict
    assert rebuilt.config.sentence == "plain" and not rebuilt.sentence.residual


def test_residual_checkpoints_made_before_the_local_convolution_rebuild_without_it(positions):
    """A residual checkpoint whose config has no ``sentence_local`` has no convolution weights."""
    old = v1(positions, sentence_local=0)
    config = old.config.to_dict()
    config.pop("sentence_local")
    rebuilt = build_model("brain2qwerty_v1", config, N_CHANS, positions, 2)
    rebuilt.load_state_dict(old.state_dict())  # strict, as model_from_checkpoint loads
    assert rebuilt.sentence.local is None and v1(positions).sentence.local is not None


def test_the_local_convolution_reads_neighbours_within_its_kernel(positions):
    """A keystroke's term moves with a neighbour inside the kernel, not with a far one."""
    model = v1(positions)
    sentence = model.sentence.eval()
    x = torch.randn(1, 20, model.config.d_model)
    mask = torch.ones(1, 20, dtype=torch.bool)
    base = sentence._neighbours(x, mask)
    near, far = x.clone(), x.clone()
    near[0, 14] = torch.randn(x.shape[-1])  # 4 keys after key 10: inside a kernel of 9
    far[0, 15] = torch.randn(x.shape[-1])  # 5 keys after: outside
    assert (sentence._neighbours(near, mask)[0, 10] - base[0, 10]).abs().max() > 1e-4
    torch.testing.assert_close(sentence._neighbours(far, mask)[0, 10], base[0, 10])


def test_invalid_sentence_kind_is_refused():
    with pytest.raises(ValueError, match="Invalid value for 'sentence': 'mixed'"):
        dataclasses.replace(Brain2QwertyV1Config.named("small"), sentence="mixed")
    with pytest.raises(ValueError, match="'embedding_dropout': must be in \\[0, 1\\)"):
        dataclasses.replace(Brain2QwertyV1Config.named("small"), embedding_dropout=1.0)
    for kernel in (-1, 4):
        with pytest.raises(ValueError, match="'sentence_local': must be 0 \\(none\\) or a "):
            dataclasses.replace(Brain2QwertyV1Config.named("small"), sentence_local=kernel)


def _bank(seed: int = 0, n: int = 600, margin: float = 1.5) -> pretrain.ConfusionBank:
    """Noisy logits of a conv head that is right about half the time (all classes seen)."""
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % N_CLASSES
    logits = rng.normal(0.0, 1.0, (n, N_CLASSES))
    logits[np.arange(n), targets] += margin
    return pretrain.ConfusionBank(logits, targets)


def test_confusion_bank_simulates_the_held_out_confusions_without_reusing_a_vector():
    rng = np.random.default_rng(0)
    held_out = _bank(seed=1, n=290, margin=2.0)  # right about 70 % of the time
    real_accuracy = held_out.conv_accuracy()
    classes = np.tile(np.arange(N_CLASSES), 200)
    sampled = held_out.sample(classes, rng)
    assert sampled.shape == (len(classes), N_CLASSES) and sampled.dtype == np.float32
    assert abs((sampled.argmax(1) == classes).mean() - real_accuracy) < 0.1
    # fresh noise every draw: no simulated keystroke is one of the real ones
    distances = np.abs(sampled[:, None, :] - held_out.logits[None, :, :]).max(-1)
    assert distances.min() > 1e-3
    hard = held_out.sample(classes, rng, difficulty=1.0)
    assert (hard.argmax(1) == classes).mean() < (sampled.argmax(1) == classes).mean() - 0.1


def test_confusion_bank_takes_the_confusions_from_training_and_the_margin_from_held_out():
    """Training keystrokes show which classes are confused; held-out ones how sure conv is."""
    rng = np.random.default_rng(0)
    n = 29 * 20
    train_targets = np.arange(n) % N_CLASSES
    train = rng.normal(0.0, 0.3, (n, N_CLASSES))
    train[np.arange(n), train_targets] += 8.0  # over-sure on its own training keystrokes
    train[np.arange(n), (train_targets + 1) % N_CLASSES] += 4.0  # and confuses c with c + 1
    held = _bank(seed=2, n=116, margin=2.0)
    bank = pretrain.ConfusionBank(held.logits, held.targets, train, train_targets)
    true = bank.means[np.arange(N_CLASSES), np.arange(N_CLASSES)]
    neighbour = bank.means[np.arange(N_CLASSES), (np.arange(N_CLASSES) + 1) % N_CLASSES]
    others = np.delete(bank.means[0], [0, 1])
    held_true = held.logits[np.arange(116), held.targets].mean()
    assert abs(true.mean() - held_true) < 0.5  # the held-out margin, not 8
    assert (neighbour > others.max()).all() and (true > neighbour).all()  # the training shape
    sampled = bank.sample(np.repeat(np.arange(N_CLASSES), 100), rng)
    wrong = sampled.argmax(1) != np.repeat(np.arange(N_CLASSES), 100)
    read_as, true = sampled.argmax(1)[wrong], np.repeat(np.arange(N_CLASSES), 100)[wrong]
    # errors stay between the classes conv confuses (c and c + 1: a c + 1 read as c, or a c
    # read as c - 1, whose vectors hold c second), well above chance
    as_neighbour = np.mean(np.abs((read_as - true + 1) % N_CLASSES - 1) == 1)
    assert as_neighbour / 2 > 1.3 * (1 - as_neighbour) / (N_CLASSES - 3)  # per offset
    with pytest.raises(ValueError, match="no held-out keystroke"):
        pretrain.ConfusionBank(np.zeros((0, N_CLASSES)), np.zeros(0))
    with pytest.raises(ValueError, match=r"expected logits \(n, 29\)"):
        pretrain.ConfusionBank(np.zeros((3, 5)), np.zeros(3))


def test_confusion_bank_makes_rare_classes_less_sure_than_common_ones():
    """A class the training split saw 4 times reads weaker than one it saw 64 times."""
    rng = np.random.default_rng(3)
    counts = np.full(N_CLASSES, 64)
    counts[5] = 4  # (4 / 64) ** 0.5 = 0.25: held at the floor, RARE_FLOOR
    counts[7] = 16  # (16 / 64) ** 0.5 = 0.5
    train_targets = np.repeat(np.arange(N_CLASSES), counts)
    train = rng.normal(0.0, 0.3, (len(train_targets), N_CLASSES))
    train[np.arange(len(train)), train_targets] += 6.0
    train[np.arange(len(train)), (train_targets + 1) % N_CLASSES] += 2.0
    held = _bank(seed=4, n=290, margin=3.0)
    bank = pretrain.ConfusionBank(held.logits, held.targets, train, train_targets)

    def gap(c):
        row = bank.means[c]
        return row[c] - np.delete(row, c).mean()

    common = np.median([gap(c) for c in range(N_CLASSES) if c not in (5, 7)])
    assert gap(5) == pytest.approx(pretrain.RARE_FLOOR * common, rel=0.15)
    assert gap(7) == pytest.approx(0.5 * common, rel=0.15)
    # the confusions keep their shape: the rare class is still read as its neighbour first
    assert np.argsort(bank.means[5])[-2] == 6 and bank.means[5].argmax() == 5
    classes = np.repeat([0, 5], 2000)
    right = bank.sample(classes, rng).argmax(1) == classes
    assert right[2000:].mean() < right[:2000].mean() - 0.1


@pytest.fixture
def one_thread():
    """Small matrices: one torch thread (two, on busy shared cores, run 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _calibrated_logits(seed: int, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a calibrated head: each keystroke's class is drawn from its own softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, scale, (n, N_CLASSES))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    targets = (probs.cumsum(1) < rng.random((n, 1))).sum(1).clip(max=N_CLASSES - 1)
    return logits, targets


def test_confusion_bank_is_as_calibrated_as_the_held_out_keystrokes():
    """Where a simulated keystroke reads p, it is right about p of the time, as real ones are.

    The old bank read 0.5 where it was right 94 % of the time (docs/BENCHMARKS.md), so the
    transformer learned to sharpen whatever conv read.
    """
    logits, targets = _calibrated_logits(seed=5, n=3000, scale=2.5)
    bank = pretrain.ConfusionBank(logits, targets)
    assert 0.8 < bank.calibration < 1.25  # a calibrated head needs no temperature
    rng = np.random.default_rng(6)
    classes = np.tile(np.arange(N_CLASSES), 300)
    sampled = bank.sample(classes, rng)
    probs = np.exp(sampled - sampled.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    confidence, right = probs.max(1), probs.argmax(1) == classes
    for low, high in ((0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)):
        inside = (confidence >= low) & (confidence < high)
        assert inside.sum() > 200
        assert abs(right[inside].mean() - confidence[inside].mean()) < 0.08, (low, high)
    # an under-confident head (right half the time, reading ~0.25) gets a temperature below 1
    # and a bank as often right as it is
    under = _bank(seed=1, n=2000, margin=2.0)
    assert under.calibration < 0.9
    accuracy = (under.sample(classes, rng).argmax(1) == classes).mean()
    assert abs(accuracy - under.conv_accuracy()) < 0.08


def test_synthetic_banks_span_near_chance_to_near_perfect_heads():
    banks = pretrain.synthetic_banks((1.0, 4.0, 7.0), seed=0)
    rng = np.random.default_rng(0)
    classes = np.tile(np.arange(N_CLASSES), 100)
    accuracy = [(b.sample(classes, rng).argmax(1) == classes).mean() for b in banks]
    assert accuracy[0] < 0.4 and accuracy[-1] > 0.85 and accuracy == sorted(accuracy)
    assert all(b.calibration == 1.0 for b in banks)


def test_a_context_prior_round_trips_and_only_loads_into_its_own_size(tmp_path):
    config = Brain2QwertyV1Config.named("small")
    make = lambda c: SentenceTransformer(c, conv_head=torch.nn.Linear(c.hidden, N_CLASSES))  # noqa: E731
    torch.manual_seed(0)
    trained = make(config)
    for p in pretrain.prior_parameters(trained).values():
        torch.nn.init.normal_(p)
    path = pretrain.save_prior(trained, tmp_path / "prior.npz", {"steps": 7})
    fresh = make(config)
    assert pretrain.load_prior(fresh, path) == {"steps": 7}
    for name, value in pretrain.prior_parameters(fresh).items():
        torch.testing.assert_close(value, pretrain.prior_parameters(trained)[name])
    other = make(dataclasses.replace(config, **TINY))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    assert pretrain.load_prior(other, path) is None  # another size: left as it was
    for key, value in other.state_dict().items():
        torch.testing.assert_close(value, before[key])
    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="Regenerate it with scripts/pretrain_sentence_prior.py"):
        pretrain.load_prior(fresh, broken)


def test_the_shipped_context_prior_fits_the_small_transformer():
    config = Brain2QwertyV1Config.named("small")
    sentence = SentenceTransformer(config, conv_head=torch.nn.Linear(config.hidden, N_CLASSES))
    meta = pretrain.load_prior(sentence)
    assert meta is not None and meta["config"] == "small" and meta["steps"] >= 1000
    assert meta["loss_last"] < meta["loss_first"]
    # trained: the correction it makes is no longer zero, as a fresh residual's is
    assert float(sentence.head.weight.detach().abs().sum()) > 0


def test_text_pretraining_lowers_the_denoising_loss(positions, one_thread):
    torch.manual_seed(0)
    config = dataclasses.replace(Brain2QwertyV1Config.named("small"), **TINY)
    model = Brain2QwertyV1(N_CHANS, positions, 1, config)
    texts = pretrain.corpus_texts(max_lines=300)
    bank = _bank()
    rng = np.random.default_rng(123)
    held_out = [pretrain._batch(texts, [50], bank, rng, 16, "cpu") for _ in range(4)]

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(np.mean([pretrain.denoising_loss(model.sentence, b) for b in held_out]))

    before = loss()  # the residual at init: conv only, the bank's own cross-entropy
    conv_weights = {k: v.clone() for k, v in model.conv_head.state_dict().items()}
    result = pretrain.pretrain_sentence(model.sentence, bank, texts, steps=150, lr=3e-3)
    after = loss()
    assert after < before - 0.05, (before, after)
    assert result["last"] < result["first"]
    for key, value in model.conv_head.state_dict().items():  # the conv head is left alone
        torch.testing.assert_close(value, conv_weights[key])
    with pytest.raises(ValueError, match="needs a residual sentence transformer"):
        plain = Brain2QwertyV1(N_CHANS, positions, 1, dataclasses.replace(config, sentence="plain"))
        pretrain.pretrain_sentence(plain.sentence, bank, texts, steps=1)


def test_sentence_stage_on_calibration_data(positions, typing_session):
    dataset = build_typing_dataset([typing_session])
    split = dataset.split(seed=0)
    config = dataclasses.replace(Brain2QwertyV1Config.named("small"), **TINY)
    model = Brain2QwertyV1(dataset.n_chans, dataset.channels.positions, 1, config)
    skipped = pretrain.sentence_stage(model, dataset, split, steps=2)
    assert "fewer than 40" in skipped["skipped"]
    summary = pretrain.sentence_stage(model, dataset, split, steps=3, finetune_epochs=1, min_keys=1)
    assert summary["steps"] == 3 and summary["bank_keys"] > 0
    assert summary["prior"] is None  # the shipped prior is for the small size, not TINY's
    assert summary["bank_calibration"] > 0
    assert 0.0 <= summary["val_cer"] and np.isfinite(summary["loss_last"])


def test_gate_keeps_the_scale_nearest_1_within_one_standard_error_of_the_best_cer(
    positions, typing_session
):
    """The gate is folded into the head: the kept scale's CER is the model's CER afterwards."""
    dataset = build_typing_dataset([typing_session])
    config = dataclasses.replace(Brain2QwertyV1Config.named("small"), **TINY)
    torch.manual_seed(0)
    model = Brain2QwertyV1(dataset.n_chans, dataset.channels.positions, 1, config)
    with torch.no_grad():  # an untrained correction, large enough to change the argmax
        torch.nn.init.normal_(model.sentence.head.weight, std=3.0)
    head = model.sentence.head.weight.detach().clone()
    # every sentence of the session, so that the per-sentence errors have a spread
    encoded = pretrain.sentence_outputs(model, dataset.sentences, "cpu")
    assert len(encoded) >= 3
    result = pretrain.fit_gate(model, encoded)
    scores = {float(k): v for k, v in result["val_cer_by_gate"].items()}
    nlls = {float(k): v for k, v in result["val_nll_by_gate"].items()}
    assert set(scores) == set(pretrain.GATES) == set(nlls)
    se = {float(k): v for k, v in result["val_cer_se"].items()}
    best = min(scores.values())
    within = [g for g in scores if scores[g] - best <= se[g] + 1e-9]
    assert result["gate"] == min(within, key=lambda g: abs(g - 1.0))  # nearest the trained 1
    assert se[result["gate"]] >= 0 and all(v >= 0 for v in se.values())
    # the standard error is that of the per-sentence paired difference to the best gate
    per = {}
    for gate in pretrain.GATES:
        with torch.no_grad():
            model.sentence.head.weight.copy_(head * gate)
        per[gate] = [pretrain.sentence_cer(model, [one])[0] for one in encoded]
    with torch.no_grad():
        model.sentence.head.weight.copy_(head * result["gate"])
    best_gate = min(scores, key=lambda g: (round(scores[g], 9), abs(g - 1.0)))
    d = np.subtract(per[0.0], per[best_gate])
    assert se[0.0] == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)))
    assert all(n > 0 for n in nlls.values())
    torch.testing.assert_close(model.sentence.head.weight, head * result["gate"])
    transformer_cer, conv_cer = pretrain.sentence_cer(model, encoded)
    assert transformer_cer == pytest.approx(scores[result["gate"]])
    assert scores[0.0] == pytest.approx(conv_cer)  # gate 0: conv only


def test_lm_weight_is_the_one_with_the_best_validation_cer_of_the_live_beam(
    positions, typing_session
):
    """Each weight's score is the CER of the live beam over the validation sentences."""
    from bci_app.lm.beam import KeystrokeBeamDecoder
    from bci_app.lm.model import default_lm
    from bci_app.typing.alphabet import cer, classes_to_text

    dataset = build_typing_dataset([typing_session])
    split = dataset.split(seed=0)
    config = dataclasses.replace(Brain2QwertyV1Config.named("small"), **TINY)
    model = Brain2QwertyV1(dataset.n_chans, dataset.channels.positions, 1, config)
    encoded = pretrain.sentence_outputs(model, [dataset.sentences[i] for i in split["val"]], "cpu")
    lm = default_lm(6)
    result = pretrain.fit_lm_weight(model, encoded, lm, weights=(0.0, 0.5, 2.0), beam_width=8)
    scores = {float(k): v for k, v in result["val_cer_by_weight"].items()}
    assert set(scores) == {0.0, 0.5, 2.0} and scores[result["weight"]] == min(scores.values())
    assert result["weight"] == min(  # ties go to the weight nearest the default, 0.5
        (w for w in scores if scores[w] == min(scores.values())), key=lambda w: abs(w - 0.5)
    )
    assert model.training  # left as it was found
    model.eval()  # as fit_lm_weight runs it (dropout off)
    beam = KeystrokeBeamDecoder(lm, top_k=5, beam_width=8, lm_weight=2.0)
    cers = []
    with torch.no_grad():
        for embeddings, targets in encoded:
            mask = torch.ones(embeddings.shape[:2], dtype=torch.bool)
            beam.reset()
            for row in torch.log_softmax(model.sentence(embeddings, mask)[0], -1).numpy():
                beam.step(row)
            cers.append(cer(beam.finalize(), classes_to_text(targets.numpy())))
    assert scores[2.0] == pytest.approx(np.mean(cers))


@pytest.mark.slow
def test_the_old_shipped_bundle_still_decodes(tmp_path):
    """The bundle shipped before the residual transformer (from git) decodes as before."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the old bundle is read from the repository's history")
    folder = tmp_path / "typing-meg-small-old"
    folder.mkdir()
    for name in OLD_BUNDLE_FILES:
        spec = f"{OLD_BUNDLE_COMMIT}:bci_app/data/bundles/typing-meg-small/{name}"
        done = subprocess.run(["git", "show", spec], cwd=ROOT, capture_output=True, check=False)
        if done.returncode:
            pytest.skip(f"the repository's history lacks {spec} (a shallow clone?)")
        (folder / name).write_bytes(done.stdout)
    from bci_app.typing.evaluate import evaluate_bundle

    session = Simulator("meg", "typing", snr=2.0, seed=0).generate(25.0)
    report = evaluate_bundle(folder, [session], provider="cpu")
    first = report["recordings"][0]["sentences"][0]
    assert (
        "sentence"
        not in __import__("json").loads((folder / "manifest.json").read_text())["model_config"]
    )
    assert first["n_keys"] >= 20 and first["cer"]["lm"] < 0.2


def test_text_pretrain_setting_is_checked(typing_session, tmp_path):
    from models.training import train_typing

    with pytest.raises(ValueError, match="Invalid value for 'text_pretrain': -1"):
        train_typing([typing_session], tmp_path / "out", text_pretrain=-1, progress=False)
