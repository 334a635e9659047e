"""Benchmark drift re-centering: top-10 speech retrieval on a later "day", fixed vs running stats.

A speech bundle (default: the shipped ``speech-meg-small``) is scored on held-out simulated
listening sessions of its subject, as recorded (day 1) and with day-to-day drift (another
day): every channel's gain multiplied by ``global_gain * exp(N(0, gain_sd))`` and an offset of
``N(0, offset_sd)`` channel standard deviations added, a different draw per session. Each is
decoded twice through the live code path (chunked Preprocessor, word-onset windows, ORT):
with the bundle's fixed robust-scaler statistics, and with :mod:`bci_app.processing.recentering`
re-centering (running median/IQR over ``--window`` s, updated every ``--update`` s). Scores:
top-1/top-10 of each word window's own 3 s audio segment among the N segments of its session,
and of the heard word among the bundle's candidate words, against chance.

Usage: ``python scripts/bench_drift.py`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from acquisition.recording import Recording, parse_marker
from acquisition.simulator import Simulator
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.manifest import thaw
from bci_app.decoders.runtime import OnnxRuntime
from bci_app.decoders.shipped import SPEECH_BUNDLE
from bci_app.processing.preprocessing import Preprocessor
from bci_app.processing.recentering import RecenterConfig
from bci_app.speech.decoder import SpeechDecoder, make_windower, preprocess_config, retrieval_ranks
from bci_app.speech.evaluate import segment_audio_embeddings
from bci_app.speech.extractors import features_from_manifest


def with_drift(
    recording: Recording,
    rng: np.random.Generator,
    gain_sd: float,
    offset_sd: float,
    global_gain: float = 1.0,
) -> Recording:
    """The recording as another day would give it: per-channel gain and offset changes."""
    n = recording.data.shape[1]
    gain = global_gain * np.exp(rng.normal(0.0, gain_sd, n))
    offset = rng.normal(0.0, offset_sd, n) * recording.data.std(axis=0)
    data = (recording.data * gain + offset).astype(recording.data.dtype)
    return Recording(
        data,
        recording.timestamps,
        recording.sfreq,
        recording.channels,
        list(recording.markers),
        name=f"{recording.name} + drift",
        meta=recording.meta,
    )


def word_windows_live(bundle, recording: Recording, recenter: RecenterConfig | None):
    """Word windows through a chunked Preprocessor (1 s chunks), as the live pipeline cuts them."""
    config = preprocess_config(bundle)
    if recenter is not None:
        config = config.with_recentering(recenter)
    pre = Preprocessor(config, recording.channels.names)
    windower = make_windower(bundle)
    windows = windower.push_markers(recording.markers)
    step = int(recording.sfreq)
    for i in range(0, recording.n_times, step):
        chunk = pre.process(recording.data[i : i + step], recording.timestamps[i : i + step])
        windows += windower.push_data(*chunk)
    return [w for w in windows if w.valid]


def score(bundle, decoder, audio_graph, recording, recenter) -> dict[str, float]:
    """Segment and candidate-word top-1/top-10 of one recording."""
    windows = word_windows_live(bundle, recording, recenter)
    brain = decoder.embed(np.stack([w.data for w in windows]))
    features = features_from_manifest(bundle.manifest)
    audio = segment_audio_embeddings(
        bundle, audio_graph, features, recording, recording.name, None, windows
    )
    seg = retrieval_ranks(brain, audio)
    index = {t: i for i, t in enumerate(decoder.texts)}
    target = np.array([index.get(parse_marker(w.marker.value)[1].lower(), -1) for w in windows])
    order = np.argsort(-(brain @ decoder.embeddings.T), axis=1, kind="stable")
    hit = order == target[:, None]
    cand = np.where(hit.any(axis=1), hit.argmax(axis=1), len(decoder.texts))
    return {
        "n": len(windows),
        "seg_top1": float(np.mean(seg < 1)),
        "seg_top10": float(np.mean(seg < 10)),
        "seg_chance10": min(10, len(seg)) / len(seg),
        "cand_top1": float(np.mean(cand < 1)),
        "cand_top10": float(np.mean(cand < 10)),
    }


def main() -> None:
    """Parse arguments, score every (session, day, statistics) case, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(SPEECH_BUNDLE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11])
    parser.add_argument("--duration", type=float, default=240.0, help="seconds per session")
    parser.add_argument("--gain-sd", type=float, default=0.4, help="sd of log channel gain")
    parser.add_argument("--offset-sd", type=float, default=2.0, help="offset sd (channel sds)")
    parser.add_argument("--global-gain", type=float, default=1.0, help="gain of every channel")
    parser.add_argument("--window", type=float, default=120.0, help="re-centering window (s)")
    parser.add_argument("--update", type=float, default=5.0, help="re-centering update (s)")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    demo = thaw((bundle.manifest.demo and bundle.manifest.demo.simulator) or {})
    params = {k: v for k, v in demo.items() if k not in ("modality", "task")}
    decoder = SpeechDecoder(bundle, provider="cpu")
    audio_graph = OnnxRuntime(bundle.graph_path("audio"), "cpu", warmup=0)
    recenter = RecenterConfig(window_s=args.window, update_s=args.update)
    print(
        f"bundle {bundle.name}, {decoder.n_candidates} candidate words; drift: gain "
        f"{args.global_gain:g} x exp(N(0, {args.gain_sd:g})), offset sd {args.offset_sd:g}; "
        f"re-centering over {args.window:g} s every "
        f"{args.update:g} s"
    )
    print(
        f"{'session':>8} {'day':>6} {'stats':>8} {'N':>4} {'seg@1':>6} {'seg@10':>6} "
        f"{'chance':>6} {'word@1':>6} {'word@10':>7}"
    )
    rows = []
    started = time.perf_counter()
    for seed in args.seeds:
        day1 = Simulator("meg", "listening", seed=seed, **params).generate(args.duration)
        day1.name = f"seed {seed}"
        rng = np.random.default_rng(seed)
        day2 = with_drift(day1, rng, args.gain_sd, args.offset_sd, args.global_gain)
        for day, rec in (("same", day1), ("drift", day2)):
            for stats, config in (("fixed", None), ("recenter", recenter)):
                r = score(bundle, decoder, audio_graph, rec, config)
                rows.append((day, stats, r))
                print(
                    f"{seed:8d} {day:>6} {stats:>8} {r['n']:4d} {r['seg_top1']:6.3f} "
                    f"{r['seg_top10']:6.3f} {r['seg_chance10']:6.3f} {r['cand_top1']:6.3f} "
                    f"{r['cand_top10']:7.3f}",
                    flush=True,
                )
    print("mean over sessions (segment top-10 / word top-10):")
    for day in ("same", "drift"):
        for stats in ("fixed", "recenter"):
            pick = [r for d, s, r in rows if d == day and s == stats]
            seg = np.mean([r["seg_top10"] for r in pick])
            word = np.mean([r["cand_top10"] for r in pick])
            print(f"  {day:>5} day, {stats:>8} statistics: {seg:.3f} / {word:.3f}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
