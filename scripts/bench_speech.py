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
"""

from __future__ import annotations

import argparse
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


def compare_bundles(paths: list[Path], seeds, seconds: float) -> dict:
    """Top-10 of each bundle on the same held-out simulated listening sessions."""
    from bci_app.speech.evaluate import evaluate_speech_bundle

    bundles = [load_bundle(p) for p in paths]
    settings = dict(bundles[0].manifest.demo.simulator)
    scores = {str(p): {"candidates": [], "segments": []} for p in paths}
    for seed in seeds:
        print(f"[compare] session seed {seed}", flush=True)
        session = Simulator(seed=seed, **settings).generate(seconds)
        for path, bundle in zip(paths, bundles):
            overall = evaluate_speech_bundle(bundle, [session], provider="cpu")["overall"]
            for kind in ("candidates", "segments"):
                scores[str(path)][kind].append(overall[kind]["top10"])
    settings.pop("sentences", None)
    return {"simulator": settings, "seeds": list(seeds), "seconds": seconds, "top10": scores}


def format_comparison(result: dict) -> str:
    """Mean [95 % interval] per bundle, then the paired difference from the first bundle."""
    from bci_app.stats import mean_interval

    sim = result["simulator"]
    lines = [
        f"Top-10 over {len(result['seeds'])} held-out simulated listening sessions "
        f"({sim.get('modality')}, snr {sim.get('snr')}, seeds {result['seeds'][0]}-"
        f"{result['seeds'][-1]}, {result['seconds']:g} s each): mean [95 % t interval]",
        f"{'bundle':<40} {'candidate words':>22} {'own audio segment':>22}",
    ]
    items = list(result["top10"].items())
    for i, (name, scores) in enumerate(items):
        cells = []
        for kind in ("candidates", "segments"):
            mean, low, high = mean_interval(scores[kind])
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
        lines.append(f"{name[-40:]:<40} " + " ".join(f"{c:>22}" for c in cells))
        if i:
            cells = []
            for kind in ("candidates", "segments"):
                diff = np.subtract(scores[kind], items[0][1][kind])
                mean, low, high = mean_interval(diff)
                cells.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]")
            lines.append(
                f"{'  minus the first (paired)':<40} " + " ".join(f"{c:>22}" for c in cells)
            )
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
    args = parser.parse_args(argv)
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
