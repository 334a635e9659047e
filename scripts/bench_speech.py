"""Benchmark the speech decoder: held-out retrieval accuracy vs chance, and ORT vs torch latency.

For each modality (EEG, MEG, iEEG) and SNR, trains the ``small`` speech decoder on one simulated
listening session and scores a held-out session (other seed, other sentences): top-10 accuracy
of each word window's own 3 s audio segment among N candidate segments, for N = all word
windows of the held-out session and a smaller N (random subsets, averaged), against chance
10 / N. Then times one window (batch 1) through the exported ``brain`` graph in onnxruntime and
through the torch model in eager mode, on the same input, and prints the ratio.

Usage: ``python scripts/bench_speech.py --quick`` (2 SNRs, short sessions; ~10 min on 2 CPU
cores), or without ``--quick`` for longer sessions; ``--audio-model DIR`` trains on a local
wav2vec2-family model's features instead of log-mel (compare the two tables).

``--compare BUNDLE [BUNDLE ...]`` trains nothing: it scores existing speech bundles on the same
held-out simulated listening sessions (``--seeds``, default 2000-2007, which no training script
uses; simulator settings from the first bundle's ``demo.simulator``, ``--test-seconds`` each,
default 90) and prints per bundle the mean top-10 over the sessions with its 95 % t interval
(candidate words, and each window's own audio segment among the session's), then the paired
difference from the first bundle.

``--anti-alias`` settles the resampler's anti-alias filter: per ``--train-seeds`` (default 100,
555, 1000) it trains the shipped recipe (``scripts/make_speech_bundle.py``: MEG magnetometers,
the shipped vocabulary and snr; ``--train-seconds`` default 360, ``--epochs`` default 25) with
the linear and with the minimum-phase FIR on the same session, scores both on the same held-out
``--seeds``, and prints each filter's mean [95 % t interval] and the paired difference
minphase - linear per training seed, over all pairs, and over the training seeds' means
(``--json-out FILE`` keeps every session's scores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from acquisition.simulator import Simulator
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.runtime import OnnxRuntime
from bci_app.speech.decoder import SpeechDecoder, retrieval_ranks
from bci_app.speech.evaluate import segment_audio_embeddings, word_windows
from bci_app.speech.extractors import features_from_manifest
from models.checkpoint import load_checkpoint
from models.export import quiet_exporter
from models.registry import build_model
from models.training import train_speech

MODALITIES = ("eeg", "meg", "ieeg")
COMPARE_SEEDS = tuple(range(2000, 2008))
#: Anti-alias filters compared by ``--anti-alias`` (the first is the baseline of the differences).
FILTERS = ("linear", "minphase")
#: Scores of each held-out session kept by ``--anti-alias``.
SCORES = ("candidates_top1", "candidates_top10", "segments_top1", "segments_top10")


def shipped_session() -> dict:
    """Simulator settings of the shipped speech bundle's session (MEG, its vocabulary and snr)."""
    from bci_app.decoders.shipped import SPEECH_BUNDLE
    from bci_app.live.builtin import simulator_params

    params = simulator_params(load_bundle(SPEECH_BUNDLE), "meg", "listening")
    return {"modality": "meg", "task": "listening", **params}


def session_scores(bundle, session) -> dict[str, float]:
    """Top-1/top-10 of one held-out session: candidate words and own audio segments."""
    from bci_app.speech.evaluate import evaluate_speech_bundle

    entry = evaluate_speech_bundle(bundle, [session], provider="cpu")["recordings"][0]
    return {
        f"{mode}_top{k}": entry[mode][f"top{k}"]
        for mode in ("candidates", "segments")
        for k in (1, 10)
    }


def compare_filters(args) -> dict:
    """Train the shipped recipe with each anti-alias filter per training seed; score both.

    Paired: the same training session and the same held-out sessions; only the filter differs.
    """
    settings = shipped_session()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-speech-filters-") as tmp:
        for train_seed in args.train_seeds:
            calibration = Simulator(seed=train_seed, **settings).generate(args.train_s)
            bundles = {}
            for anti_alias in FILTERS:
                out = Path(tmp) / f"{train_seed}-{anti_alias}"
                started = time.perf_counter()
                with quiet_exporter():
                    metrics = train_speech(
                        [calibration],
                        out,
                        config="small",
                        epochs=args.epochs,
                        seed=0,
                        picks=["mag"],
                        progress=False,
                        device="cpu",
                        anti_alias=anti_alias,
                    )
                print(
                    f"[filters] training seed {train_seed}, {anti_alias}: "
                    f"{time.perf_counter() - started:.0f} s, {metrics['epochs_run']} epochs",
                    flush=True,
                )
                bundles[anti_alias] = load_bundle(out)
            for seed in args.seeds:
                session = Simulator(seed=seed, **settings).generate(args.test_s)
                for anti_alias, bundle in bundles.items():
                    row = {"train_seed": train_seed, "session_seed": seed, "anti_alias": anti_alias}
                    rows.append({**row, **session_scores(bundle, session)})
    settings.pop("sentences", None)
    return {
        "simulator": settings,
        "train_seconds": args.train_s,
        "test_seconds": args.test_s,
        "epochs": args.epochs,
        "train_seeds": list(args.train_seeds),
        "seeds": list(args.seeds),
        "rows": rows,
    }


def format_filters(result: dict) -> str:
    """Per filter mean [95 % t interval]; paired differences per training seed and pooled."""
    from bci_app.stats import format_interval

    def column(anti_alias, score, train_seed=None):
        return [
            r[score]
            for r in result["rows"]
            if r["anti_alias"] == anti_alias and train_seed in (None, r["train_seed"])
        ]

    base, other = FILTERS
    lines = [
        f"Anti-alias filter, shipped speech recipe ({result['train_seconds']:g} s calibration, "
        f"<= {result['epochs']} epochs), training seeds {result['train_seeds']} x held-out "
        f"sessions {result['seeds']} ({result['test_seconds']:g} s, snr "
        f"{result['simulator']['snr']:g}): mean [95 % t interval] (n)",
    ]
    for score in SCORES:
        lines.append(f"{score}:")
        for anti_alias in FILTERS:
            lines.append(f"  {anti_alias:<9} {format_interval(column(anti_alias, score))}")
        for train_seed in result["train_seeds"]:
            diff = np.subtract(column(other, score, train_seed), column(base, score, train_seed))
            lines.append(f"  {other} - {base}, training seed {train_seed}: {format_interval(diff)}")
        pooled = np.subtract(column(other, score), column(base, score))
        lines.append(f"  {other} - {base}, all pairs: {format_interval(pooled)}")
        per_seed = [
            np.mean(column(other, score, s)) - np.mean(column(base, score, s))
            for s in result["train_seeds"]
        ]
        lines.append(f"  {other} - {base}, per training seed: {format_interval(per_seed)}")
    return "\n".join(lines)


def compare_bundles(paths: list[Path], seeds, seconds: float) -> dict:
    """Top-1/top-10 of each bundle on the same held-out simulated listening sessions."""
    bundles = [load_bundle(p) for p in paths]
    settings = dict(bundles[0].manifest.demo.simulator)
    # one entry per bundle given, in order (the same folder twice is two entries)
    scores = [{"bundle": str(p), **{score: [] for score in SCORES}} for p in paths]
    for seed in seeds:
        print(f"[compare] session seed {seed}", flush=True)
        session = Simulator(seed=seed, **settings).generate(seconds)
        for entry, bundle in zip(scores, bundles, strict=True):
            for score, value in session_scores(bundle, session).items():
                entry[score].append(value)
    settings.pop("sentences", None)
    return {"simulator": settings, "seeds": list(seeds), "seconds": seconds, "scores": scores}


def format_comparison(result: dict) -> str:
    """Mean [95 % interval] per bundle and score, then the paired difference from the first."""
    from bci_app.stats import format_interval

    sim = result["simulator"]
    lines = [
        f"Over {len(result['seeds'])} held-out simulated listening sessions "
        f"({sim.get('modality')}, snr {sim.get('snr')}, seeds {result['seeds'][0]}-"
        f"{result['seeds'][-1]}, {result['seconds']:g} s each): mean [95 % t interval] (n); "
        "candidates: the bundle's candidate words, segments: each window's own audio segment",
    ]
    first = result["scores"][0]
    for i, scores in enumerate(result["scores"]):
        lines.append(scores["bundle"])
        for score in SCORES:
            lines.append(f"  {score:<17} {format_interval(scores[score])}")
            if i:
                diff = np.subtract(scores[score], first[score])
                lines.append(f"  {'  minus the first':<17} {format_interval(diff)} (paired)")
    return "\n".join(lines)


def subset_top10(brain: np.ndarray, audio: np.ndarray, n: int, rng, repeats: int = 20) -> float:
    """Mean top-10 accuracy among random candidate subsets of size ``n``."""
    if n >= len(brain):
        return float(np.mean(retrieval_ranks(brain, audio) < 10))
    scores = []
    for _ in range(repeats):
        pick = rng.choice(len(brain), n, replace=False)
        scores.append(np.mean(retrieval_ranks(brain[pick], audio[pick]) < 10))
    return float(np.mean(scores))


def latency(bundle_dir: Path, n: int = 50) -> dict[str, float]:
    """Per-window latency (ms, median) of the brain graph in ORT and the torch model eager."""
    bundle = load_bundle(bundle_dir)
    payload = load_checkpoint(bundle_dir / "checkpoint.pt")
    meta = payload["meta"]
    from acquisition.channels import ChannelSpec

    model = build_model(
        "speech_clip",
        meta["model_config"],
        meta["n_chans"],
        ChannelSpec.from_dict(meta["channels"]).positions,
        meta["n_subjects"],
    ).eval()
    model.load_state_dict(payload["best_model"])
    x = np.random.default_rng(0).normal(size=(1, meta["n_chans"], model.n_times)).astype("f4")
    runtime = OnnxRuntime(bundle.graph_path("brain"), "cpu")
    feeds = {"x": x, "subject": np.zeros(1, np.int64)}
    ort_ms = float(np.median(runtime.benchmark(feeds, n)) * 1e3)
    tx, ts = torch.from_numpy(x), torch.zeros(1, dtype=torch.long)
    times = []
    with torch.no_grad():
        for _ in range(5):
            model(tx, ts)
        for _ in range(n):
            t0 = time.perf_counter()
            model(tx, ts)
            times.append(time.perf_counter() - t0)
    torch_ms = float(np.median(times) * 1e3)
    return {"ort_ms": ort_ms, "torch_ms": torch_ms, "ratio": torch_ms / ort_ms}


def run_case(modality: str, snr: float, args, out: Path) -> dict:
    """Train on one session, score a held-out one; return the row."""
    train = Simulator(modality, "listening", snr=snr, seed=100).generate(args.train_s)
    test = Simulator(modality, "listening", snr=snr, seed=200).generate(args.test_s)
    bundle_dir = out / f"{modality}-{snr:g}"
    started = time.perf_counter()
    with quiet_exporter():
        metrics = train_speech(
            [train],
            bundle_dir,
            epochs=args.epochs,
            progress=False,
            device=args.device,
            audio_model=args.audio_model,
        )
    seconds = time.perf_counter() - started
    bundle = load_bundle(bundle_dir)
    decoder = SpeechDecoder(bundle, provider="cpu")
    audio_graph = OnnxRuntime(bundle.graph_path("audio"), "cpu", warmup=0)
    windows, _ = word_windows(bundle, test, "held-out")
    brain = decoder.embed(np.stack([w.data for w in windows]))
    features = features_from_manifest(bundle.manifest)
    audio = segment_audio_embeddings(bundle, audio_graph, features, test, "held-out", None, windows)
    rng = np.random.default_rng(0)
    n_all = len(windows)
    row = {
        "modality": modality,
        "snr": snr,
        "n_all": n_all,
        "train_s": round(seconds, 1),
        "top10_all": subset_top10(brain, audio, n_all, rng),
        "chance_all": min(10, n_all) / n_all,
        "n_small": args.small_n,
        "top10_small": subset_top10(brain, audio, args.small_n, rng),
        "chance_small": min(10, args.small_n) / args.small_n,
        "val_top10_same_session": metrics["test_top10"],
        "epochs": metrics["epochs_run"],
    }
    row.update(latency(bundle_dir))
    return row


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every case, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 SNRs, short sessions")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES))
    parser.add_argument(
        "--audio-model",
        metavar="DIR",
        help="local wav2vec2-family checkpoint as the audio features (default: log-mel)",
    )
    parser.add_argument("--snrs", type=float, nargs="+", help="SNRs (default 0.5 1 3; quick 1 3)")
    parser.add_argument("--train-seconds", type=float, help="training session (600 s; quick 150)")
    parser.add_argument("--test-seconds", type=float, help="held-out session (180 s; quick 75)")
    parser.add_argument("--epochs", type=int, help="maximum epochs (30; quick 12)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="BUNDLE", help="score bundles")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(COMPARE_SEEDS))
    parser.add_argument(
        "--anti-alias",
        action="store_true",
        help="train the shipped recipe with the linear and the minimum-phase anti-alias filter "
        "per --train-seeds and compare them on the held-out --seeds (paired)",
    )
    parser.add_argument("--train-seeds", nargs="+", type=int, default=[100, 555, 1000])
    parser.add_argument("--json-out", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    if args.anti_alias:
        args.train_s = args.train_seconds or 360.0
        args.test_s = args.test_seconds or 90.0
        args.epochs = args.epochs or 25
        torch.set_num_threads(1)
        result = compare_filters(args)
        print(format_filters(result))
        if args.json_out:
            args.json_out.write_text(json.dumps(result, indent=1))
        return
    if args.compare:
        result = compare_bundles(args.compare, args.seeds, args.test_seconds or 90.0)
        print(format_comparison(result))
        return
    args.snrs = args.snrs or ((1.0, 3.0) if args.quick else (0.5, 1.0, 3.0))
    args.train_s = args.train_seconds or (150.0 if args.quick else 600.0)
    args.test_s = args.test_seconds or (75.0 if args.quick else 180.0)
    args.epochs = args.epochs or (12 if args.quick else 30)
    args.small_n = 25
    torch.manual_seed(0)
    print(
        f"{'mod':5} {'snr':>4} {'N':>4} {'top10':>6} {'chance':>6} {'N':>3} {'top10':>6} "
        f"{'chance':>6} {'in-sess':>7} {'ORT ms':>7} {'torch ms':>8} {'ratio':>5} {'train s':>7}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
        for modality in args.modalities:
            for snr in args.snrs:
                r = run_case(modality, snr, args, Path(tmp))
                print(
                    f"{r['modality']:5} {r['snr']:4g} {r['n_all']:4d} {r['top10_all']:6.3f} "
                    f"{r['chance_all']:6.3f} {r['n_small']:3d} {r['top10_small']:6.3f} "
                    f"{r['chance_small']:6.3f} {r['val_top10_same_session']:7.3f} "
                    f"{r['ort_ms']:7.2f} {r['torch_ms']:8.2f} {r['ratio']:5.1f} "
                    f"{r['train_s']:7.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
