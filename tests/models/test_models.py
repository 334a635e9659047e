"""Brain2Qwerty architectures: shapes, input checks, configs, positions, masks, training steps."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from models.config import ConfigMixin
from models.layers import SpatialAttention, colocated_groups, positions_to_2d
from models.registry import MODELS, ModelSpec, build_model, get_config, register_model
from models.typing.config import BLANK_INDEX, Brain2QwertyV1Config, Brain2QwertyV2Config
from models.typing.model import Brain2QwertyV1, Brain2QwertyV2

N_CHANS, N_SUBJECTS = 32, 3
# Smaller than "small", for tests that train a few steps.
TINY = dict(spatial_channels=16, fourier_harmonics=4, hidden=32, n_conv_layers=3, d_model=32)
REAL_DIR = Path(__file__).parents[1] / "data" / "real"


def meg_like_positions(n_locations: int = 102, seed: int = 0) -> np.ndarray:
    """3D positions of a helmet with 3 co-located sensors per location (Neuromag-like)."""
    rng = np.random.default_rng(seed)
    polar, azimuth = rng.uniform(0, 1.2, n_locations), rng.uniform(-np.pi, np.pi, n_locations)
    loc = np.column_stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)]
    )
    return np.repeat(0.1 * loc + [0.0, 0.01, 0.04], 3, axis=0)


def v1(positions, **overrides) -> Brain2QwertyV1:
    config = dataclasses.replace(Brain2QwertyV1Config.named("small"), **overrides)
    return Brain2QwertyV1(N_CHANS, positions, N_SUBJECTS, config)


def v2(positions, **overrides) -> Brain2QwertyV2:
    config = dataclasses.replace(Brain2QwertyV2Config.named("small"), **overrides)
    return Brain2QwertyV2(N_CHANS, positions, N_SUBJECTS, config)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_builds_and_runs(name, positions):
    model = build_model(name, "small", N_CHANS, positions, N_SUBJECTS).eval()
    subject = torch.tensor([0, 2])
    if isinstance(model, Brain2QwertyV1):
        x = torch.randn(2, 4, N_CHANS, model.n_times)
        out = model(x, subject, torch.ones(2, 4, dtype=torch.bool))
        assert out.shape == (2, 4, 29)
    elif name == "speech_clip":
        out = model(torch.randn(2, N_CHANS, model.n_times), subject)
        assert out.shape == (2, model.config.embed_dim)
    else:
        out = model(torch.randn(2, N_CHANS, 51), subject)
        assert out.shape == (2, 26, 30)
    assert torch.isfinite(out).all()


def test_v1_heads_and_window(positions):
    model = v1(positions).eval()
    assert model.n_times == 25 and model.sfreq == 50.0  # -0.2..+0.3 s at 50 Hz, [tmin, tmax)
    x = torch.randn(3, N_CHANS, 25)
    subject = torch.tensor([0, 1, 2])
    assert model.encode(x, subject).shape == (3, model.embedding_dim)
    assert model.classify_keystrokes(x, subject).shape == (3, 29)
    conv_logits, logits = model.forward_all(
        x[None], subject[:1], torch.ones(1, 3, dtype=torch.bool)
    )
    assert conv_logits.shape == logits.shape == (1, 3, 29)
    # the conv-only head of forward_all is the per-keystroke classifier
    torch.testing.assert_close(conv_logits[0], model.classify_keystrokes(x, subject[[0, 0, 0]]))


@pytest.mark.parametrize("n_times", [1, 2, 49, 50])
def test_v2_frames_are_40ms(positions, n_times):
    model = v2(positions).eval()
    out = model(torch.randn(1, N_CHANS, n_times), torch.tensor([1]))
    assert out.shape == (1, -(-n_times // 2), 30)
    assert model.config.frame_s == pytest.approx(0.04)
    assert int(model.output_lengths(torch.tensor(n_times))) == out.shape[1]
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(out.shape[:2]))


def test_input_shape_errors(positions):
    model = v1(positions)
    ok = torch.randn(2, N_CHANS, 25)
    subject = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"n_times=26 different from \(tmax - tmin\) \* sfreq"):
        model.encode(torch.randn(2, N_CHANS, 26), subject)
    with pytest.raises(ValueError, match=r"n_chans=31 different from the decoder's n_chans=32"):
        model.encode(torch.randn(2, 31, 25), subject)
    with pytest.raises(ValueError, match="expected float32, got torch.float64"):
        model.encode(ok.double(), subject)
    with pytest.raises(ValueError, match=r"'subject': indices must be in \[0, 3\), got \[0, 3\]"):
        model.encode(ok, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"'subject': expected an int64 tensor of shape \(2,\)"):
        model.encode(ok, torch.tensor([0]))
    with pytest.raises(ValueError, match="expected \\(batch, n_keys, n_chans, n_times\\)"):
        model(ok, subject, torch.ones(2, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="'key_mask': expected a bool tensor of shape \\(2, 1\\)"):
        model(ok[:, None], subject, torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"'embeddings': expected \(batch, n_keys, 128\)"):
        model.sentence(torch.randn(1, 3, 64), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"'key_mask': expected a bool tensor of shape \(1, 3\)"):
        model.sentence(torch.randn(1, 3, 128), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"n_chans=30 different"):
        v2(positions)(torch.randn(1, 30, 20), torch.tensor([0]))
    with pytest.raises(ValueError, match="'lengths': expected an int64 tensor of shape \\(1,\\)"):
        v2(positions)(torch.randn(1, N_CHANS, 20), torch.tensor([0]), torch.tensor([1.0]))


def test_positions_errors(positions):
    bad = meg_like_positions()[:N_CHANS].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"channels \[3\] have no position"):
        positions_to_2d(bad)
    with pytest.raises(ValueError, match=r"channels \[3\] have no position"):
        build_model("brain2qwerty_v1", "small", N_CHANS, bad, N_SUBJECTS)
    with pytest.raises(ValueError, match=r"'positions': expected \(32, 2\) or \(32, 3\)"):
        build_model("brain2qwerty_v2", "small", N_CHANS, positions[:10], N_SUBJECTS)
    with pytest.raises(ValueError, match=r"2D positions must be finite and in \[0, 1\]"):
        build_model("brain2qwerty_v1", "small", N_CHANS, positions * 5, N_SUBJECTS)
    with pytest.raises(ValueError, match="3 sensors share one location but the config allows"):
        v1(meg_like_positions()[:N_CHANS], max_colocated=2)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("preset", ["small", "paper"])
def test_config_json_round_trip(name, preset):
    config = get_config(name, preset)
    text = json.dumps(config.to_dict())
    again = get_config(name, json.loads(text))
    assert again == config and type(again) is type(config)
    assert isinstance(config, ConfigMixin) and dataclasses.is_dataclass(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden = 3


def test_registry_is_written_out_and_model_modules_register_nothing():
    assert {name: spec.config_class.__name__ for name, spec in MODELS.items()} == {
        "brain2qwerty_v1": "Brain2QwertyV1Config",
        "brain2qwerty_v2": "Brain2QwertyV2Config",
        "speech_clip": "SpeechClipConfig",
    }
    code = "import sys, models.typing, models.speech\nprint('models.registry' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_config_errors():
    with pytest.raises(
        ValueError,
        match=r"Invalid keys for Brain2QwertyV1Config: \['conv_kernel', 'frame_stride'\]",
    ):
        get_config("brain2qwerty_v1", get_config("brain2qwerty_v2", "small").to_dict())
    with pytest.raises(ValueError, match="'hidden': expected int, got 12.5"):
        Brain2QwertyV1Config(hidden=12.5)
    with pytest.raises(ValueError, match="'causal': expected bool, got 1"):
        Brain2QwertyV1Config(causal=1)
    with pytest.raises(ValueError, match="d_model=100 is not divisible by n_heads=8"):
        Brain2QwertyV2Config(d_model=100)
    with pytest.raises(ValueError, match="tmax=-0.3 must be greater than tmin=-0.2"):
        Brain2QwertyV1Config(tmax=-0.3)
    with pytest.raises(ValueError, match="'conv_kernel': must be a positive odd number, got 4"):
        Brain2QwertyV2Config(conv_kernel=4)
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*\['paper', 'small'\]"):
        get_config("brain2qwerty_v1", "huge")
    with pytest.raises(ValueError, match="unknown model 'speech'"):
        build_model("speech", "small", N_CHANS, np.zeros((N_CHANS, 2)), 1)
    with pytest.raises(ValueError, match="'brain2qwerty_v1' is already registered"):
        register_model("brain2qwerty_v1", MODELS["brain2qwerty_v2"])
    assert Brain2QwertyV1Config(sfreq=100).n_times == 50


def test_register_model_keeps_registry_open(positions):
    spec = ModelSpec(Brain2QwertyV2Config, Brain2QwertyV2, "test entry")
    register_model("test_ctc_copy", spec)
    try:
        assert isinstance(
            build_model("test_ctc_copy", "small", N_CHANS, positions, 1), Brain2QwertyV2
        )
    finally:
        del MODELS["test_ctc_copy"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_counts_306_meg(name):
    counts = {}
    for preset in ("small", "paper"):
        model = build_model(name, preset, 306, meg_like_positions(), 4)
        counts[preset] = sum(p.numel() for p in model.parameters())
    typing = name.startswith("brain2qwerty")
    # small trains on 2 CPU cores in minutes; the typing paper configs are tens of M parameters,
    # the speech paper encoder about 10 M (Defossez et al. 2023)
    assert (0.5e6 if typing else 0.2e6) <= counts["small"] <= 3e6
    assert counts["paper"] > (20 if typing else 4) * counts["small"]


def test_positions_to_2d_sphere_cap():
    pos2d = positions_to_2d(meg_like_positions(n_locations=60))
    assert pos2d.shape == (180, 2) and pos2d.dtype == np.float32
    assert pos2d.min() == 0.0 and pos2d.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(pos2d[0::3], pos2d[1::3])  # co-located stay co-located
    vertex = positions_to_2d(np.vstack([[0.0, 0.01, 0.14], meg_like_positions(60)[::3]]))[0]
    extent = positions_to_2d(meg_like_positions(60)[::3])
    centre = (extent.min(0) + extent.max(0)) / 2
    assert np.linalg.norm(vertex - centre) < 0.1  # the top of the head maps near the middle


def test_positions_to_2d_real_ctf_helmet():
    raw = mne.io.read_raw_fif(REAL_DIR / "test_ctf_comp_raw.fif", verbose="error").pick("mag")
    names = raw.ch_names
    pos2d = positions_to_2d(np.array([ch["loc"][:3] for ch in raw.info["chs"]]))
    assert np.isfinite(pos2d).all() and pos2d.min() >= 0 and pos2d.max() <= 1
    assert (colocated_groups(torch.as_tensor(pos2d)) == 0).all()  # CTF: one sensor per place

    def mean_of(prefix):
        return pos2d[[i for i, n in enumerate(names) if n.startswith(prefix)]].mean(axis=0)

    assert mean_of("ML")[0] < mean_of("MR")[0]  # left is left
    assert mean_of("MLF")[1] > mean_of("MLO")[1]  # front is up, occipital down


def test_positions_to_2d_flat_grid_falls_back_to_top_view():
    grid = np.stack(np.meshgrid(np.arange(4.0), np.arange(3.0)), -1).reshape(-1, 2)
    pos2d = positions_to_2d(np.column_stack([grid, np.full(12, 0.05)]))
    np.testing.assert_allclose(pos2d, grid / 3.0, atol=1e-6)


def test_colocated_sensors_get_their_own_weights():
    pos2d = torch.as_tensor(positions_to_2d(meg_like_positions(10)))
    assert colocated_groups(pos2d).tolist() == [0, 1, 2] * 10
    attention = SpatialAttention(pos2d, 8, 2, 4, 0.2, 3).eval()
    weights = torch.softmax(attention.logits(torch.tensor([0, 1])), dim=-1)
    assert not torch.allclose(weights[..., 0], weights[..., 1])  # mag vs grad at one place
    assert not torch.allclose(weights[0], weights[1])  # per-subject heads
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 8))


def test_spatial_dropout_drops_a_disc_in_training_only(positions):
    attention = SpatialAttention(torch.as_tensor(positions), 16, 1, 4, 0.3, 1)
    x = torch.randn(64, N_CHANS, 5, requires_grad=True)
    torch.manual_seed(1)
    attention(x, torch.zeros(64, dtype=torch.long)).sum().backward()
    torch.manual_seed(1)
    dropped = attention.dropout_mask(64)
    assert dropped.any() and not dropped.all(dim=1).any()
    grad_is_zero = (x.grad == 0).all(dim=-1)
    assert torch.equal(grad_is_zero, dropped)
    pos = torch.as_tensor(positions)
    for row in dropped:  # every dropped set fits in a disc of radius 0.3
        if row.sum() > 1:
            assert torch.cdist(pos[row], pos[row]).max() < 0.6
    x.grad = None
    attention.eval()(x, torch.zeros(64, dtype=torch.long)).sum().backward()
    assert (x.grad != 0).all()


def test_spatial_dropout_never_drops_every_sensor():
    clustered = torch.full((5, 2), 0.5) + torch.linspace(0, 0.01, 5)[:, None]
    attention = SpatialAttention(clustered, 4, 1, 2, 0.99, 1)
    mask = attention.dropout_mask(200)
    assert not mask.all(dim=1).any()


def test_frozen_spatial_attention_matches(positions):
    attention = SpatialAttention(torch.as_tensor(positions), 16, 3, 4, 0.2, 1).eval()
    x, subject = torch.randn(4, N_CHANS, 7), torch.tensor([2, 0, 1, 2])
    torch.testing.assert_close(attention.frozen()(x, subject), attention(x, subject))


def test_state_dict_moves_between_montages(positions):
    trained = v1(positions)
    other = Brain2QwertyV1(
        64, np.random.default_rng(1).uniform(size=(64, 2)), N_SUBJECTS, trained.config
    )
    other.load_state_dict(trained.state_dict())
    assert other(
        torch.randn(1, 2, 64, 25), torch.tensor([1]), torch.ones(1, 2, dtype=torch.bool)
    ).shape


def test_v1_padding_does_not_change_real_keystrokes(positions):
    model = v1(positions).eval()
    sentence = torch.randn(1, 4, N_CHANS, 25)
    alone = model(sentence, torch.tensor([1]), torch.ones(1, 4, dtype=torch.bool))
    padded = torch.full((2, 7, N_CHANS, 25), float("nan"))  # padding may hold anything
    padded[0, :4] = sentence[0]
    padded[1] = torch.randn(7, N_CHANS, 25)
    key_mask = torch.zeros(2, 7, dtype=torch.bool)
    key_mask[0, :4] = True
    key_mask[1] = True
    conv_logits, logits = model.forward_all(padded, torch.tensor([1, 0]), key_mask)
    torch.testing.assert_close(logits[0, :4], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(logits).all() and torch.isfinite(conv_logits).all()


def test_v1_sentence_graph_with_no_real_keystroke_stays_finite(positions):
    model = v1(positions).eval()
    logits = model.sentence(
        torch.randn(2, 3, model.embedding_dim), torch.zeros(2, 3, dtype=torch.bool)
    )
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("causal", [False, True])
def test_v1_causal_predictions_never_change_with_later_keys(positions, causal):
    model = v1(positions, causal=causal).eval()
    torch.nn.init.normal_(model.sentence.head.weight, std=0.1)  # the residual's starts at zero
    embeddings = torch.randn(1, 6, model.embedding_dim)
    full = model.sentence(embeddings, torch.ones(1, 6, dtype=torch.bool))
    prefix = model.sentence(embeddings[:, :4], torch.ones(1, 4, dtype=torch.bool))
    same = torch.allclose(prefix, full[:, :4], atol=1e-5)
    assert same == causal


def test_v2_padded_batch_equals_examples_alone(positions):
    model = v2(positions).eval()
    long, short = torch.randn(1, N_CHANS, 60), torch.randn(1, N_CHANS, 37)
    batch = torch.zeros(2, N_CHANS, 60)
    batch[0], batch[1, :, :37] = long[0], short[0]
    subject = torch.tensor([0, 2])
    out = model(batch, subject, lengths=torch.tensor([60, 37]))
    n_short = int(model.output_lengths(torch.tensor(37)))
    torch.testing.assert_close(out[0], model(long, subject[:1])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :n_short], model(short, subject[1:])[0], atol=1e-5, rtol=1e-5)


def _assert_trains(model, loss_fn, steps=15):
    """A few AdamW steps on one batch lower the loss, and every parameter gets a gradient."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        if step == 0:
            no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
            # only the spatial weights of co-located ranks this montage lacks stay unused
            assert all(n.endswith("front_end.spatial.weight") for n in no_grad), no_grad
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_v1_trains_on_both_heads(positions):
    model = v1(positions, **TINY).train()
    # the residual transformer's last layer starts at zero, so nothing before it gets a gradient
    # on the first step; a step later everything does (this checks the first step)
    torch.nn.init.normal_(model.sentence.head.weight, std=0.01)
    x = torch.randn(4, 6, N_CHANS, 25)
    subject, key_mask = torch.tensor([0, 1, 2, 0]), torch.ones(4, 6, dtype=torch.bool)
    key_mask[3, 4:] = False
    target = torch.randint(29, (4, 6))

    def loss():
        conv_logits, logits = model.forward_all(x, subject, key_mask)
        return F.cross_entropy(conv_logits[key_mask], target[key_mask]) + F.cross_entropy(
            logits[key_mask], target[key_mask]
        )

    _assert_trains(model, loss)


def test_v2_trains_with_ctc(positions):
    model = v2(positions, **TINY).train()
    x, subject = torch.randn(3, N_CHANS, 80), torch.tensor([0, 1, 2])
    lengths = torch.tensor([80, 70, 64])
    targets = torch.randint(29, (3, 6))
    assert BLANK_INDEX == 29

    def loss():
        log_probs = model(x, subject, lengths)
        return F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            model.output_lengths(lengths),
            torch.full((3,), 6),
            blank=BLANK_INDEX,
        )

    _assert_trains(model, loss)
