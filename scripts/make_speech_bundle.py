"""Regenerate the speech decoder shipped at bci_app/data/bundles/speech-meg-small/.

Simulate -> train -> export -> evaluate, all seeded, so the bundle can be rebuilt and checked::

    .venv/bin/python scripts/make_speech_bundle.py            # a few minutes on 2 CPU cores
    .venv/bin/python scripts/make_speech_bundle.py --quick    # a smaller run, for a smoke test

1. A listening session of simulated 306-channel MEG (``Simulator("meg", "listening", snr=SNR,
   seed=TRAIN_SEED, sentences=VOCABULARY)``, subject 0). The heard sentences are the first
   ``--n-sentences`` of the sentence bank: a closed vocabulary, so every word of a later session
   is in the candidate set (the paper's protocol ranks candidates among a known set too).
2. ``models.training.train_speech`` trains the ``small`` speech decoder on its
   magnetometers (split by sentence, early stopping on validation top-10) and exports the
   verified ONNX graphs, manifest and candidate set (one audio prototype per word).
3. Only the bundle files (manifest, graphs, candidates) are copied to the output folder.
4. The bundle is scored on held-out sessions (seeds 2000-2004, which no training script uses:
   other noise, other sentence order) with
   :func:`bci_app.speech.evaluate.evaluate_speech_bundle`, the code path of live decoding; the
   mean and 95 % t interval over the sessions (:mod:`bci_app.stats`) go into the manifest's
   ``metrics.held_out`` and the README. ``--evaluate-only`` re-scores the bundle in ``--out``
   without training it again. The manifest's
   ``demo.simulator`` says which simulated stream ``bci-app run --task listening`` starts.

Training runs on one thread with deterministic kernels (bit-identical reruns).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bci_app" / "data" / "bundles" / "speech-meg-small"
SENTENCE_BANK = ROOT / "acquisition" / "data" / "text" / "sentences.txt"
NAME = "speech-meg-small"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults make the shipped bundle)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle folder to (re)write")
    p.add_argument("--snr", type=float, default=3.0, help="simulated SNR")
    p.add_argument("--n-sentences", type=int, default=30, help="sentences of the vocabulary")
    p.add_argument("--duration", type=float, default=360.0, help="training session seconds")
    p.add_argument("--train-seed", type=int, default=100, help="training session seed")
    p.add_argument(
        "--test-seeds",
        type=int,
        nargs="+",
        default=list(range(2000, 2005)),
        help="held-out sessions (seeds no training script uses)",
    )
    p.add_argument(
        "--anti-alias",
        choices=["minphase", "linear"],
        default="minphase",
        help="resampler anti-alias FIR (minphase: no wait; not worse, see bench_speech.py "
        "--anti-alias)",
    )
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="keep the bundle in --out; re-score it and rewrite its held-out figures and README",
    )
    p.add_argument("--test-duration", type=float, default=90.0, help="seconds per test session")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--quick", action="store_true", help="short run (smoke test, worse decoder)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: bit-identical reruns)")
    return p.parse_args(argv)


def vocabulary(n_sentences: int) -> list[str]:
    """The first ``n_sentences`` sentences of the bank (the demo's closed vocabulary)."""
    lines = [line.strip() for line in SENTENCE_BANK.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line][:n_sentences]


def write_readme(args: argparse.Namespace, report: dict, n_candidates: int) -> None:
    """Say in the bundle folder what it is, how it was made and how well it decodes."""
    from bci_app.stats import format_interval

    sessions = report["overall"]["sessions"]
    cand, seg = sessions["candidates"]["values"], sessions["segments"]["values"]
    n_windows = report["overall"]["candidates"]["n_windows"]
    seeds = args.test_seeds
    command = "scripts/make_speech_bundle.py" + (" --quick" if args.quick else "")
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    (args.out / "README.md").write_text(
        f"# {NAME}\n\n"
        "Speech decoder of `bci-app run --task listening`: the `small` contrastive brain/audio "
        f"model trained on {args.duration:g} s of simulated 306-channel MEG listening "
        f"(magnetometers; subject 0, snr {args.snr:g}, session seed {args.train_seed}, training "
        f"seed {args.seed}; the first {args.n_sentences} sentences of the sentence bank, so "
        f"{n_candidates} candidate words). Not a model of real brain data.\n\n"
        f"Regenerate with `.venv/bin/python {command}`.\n\n"
        f"Held-out simulated sessions: mean [95 % t interval] over {len(seeds)} sessions (seeds "
        f"{', '.join(map(str, seeds))}, {args.test_duration:g} s each, the session `bci-app "
        "simulate --task listening` plays by default: this vocabulary, snr "
        f"{args.snr:g}):\n"
        f"- candidate words: top-1 {format_interval(cand['top1'])} (chance "
        f"{mean(cand['chance_top1']):.3f}), top-10 {format_interval(cand['top10'])} (chance "
        f"{mean(cand['chance_top10']):.3f}) among N={n_candidates}, {n_windows} word windows;\n"
        f"- own 3 s audio segment among the session's segments: top-1 "
        f"{format_interval(seg['top1'])}, top-10 {format_interval(seg['top10'])} (chance "
        f"{mean(seg['chance_top10']):.3f}).\n\n"
        "Measure it yourself, e.g. for seed 2000:\n\n"
        "```bash\n"
        f"bci-app simulate --task listening --seed {seeds[0]} --duration "
        f"{args.test_duration:g} --out s{seeds[0]}.xdf\n"
        f"bci-app evaluate bci_app/data/bundles/{NAME} s{seeds[0]}.xdf   # several files: "
        "the mean and interval\n"
        "```\n"
    )


def train(args: argparse.Namespace, params: dict) -> None:
    """Simulate the calibration session, train, export; copy the bundle files to ``--out``."""
    from acquisition.simulator import Simulator
    from bci_app.decoders.bundle import copy_bundle
    from models.training import train_speech

    print(f"Simulating {args.duration:g} s of MEG listening (snr={args.snr:g})", flush=True)
    calibration = Simulator("meg", "listening", seed=args.train_seed, **params).generate(
        args.duration
    )
    with tempfile.TemporaryDirectory(prefix="bci-speech-bundle-") as tmp:
        trained = Path(tmp) / NAME
        metrics = train_speech(
            [calibration],
            trained,
            config="small",
            epochs=args.epochs,
            seed=args.seed,
            picks=["mag"],
            name=NAME,
            anti_alias=args.anti_alias,
            progress=sys.stderr.isatty(),
            device="cpu",
        )
        copy_bundle(trained, args.out)  # the bundle alone, not the checkpoints and report
    print(
        f"Trained in {metrics['train_seconds']:.0f} s ({metrics['epochs_run']} epochs): test "
        f"top-10 {metrics['test_top10']:.3f} (chance {metrics['test_chance_top10']:.3f})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Simulate, train, export, evaluate; write the bundle to ``--out``."""
    args = parse_args(argv)
    if args.quick:
        args.duration, args.epochs, args.test_duration = 120.0, 4, 40.0
    import torch

    from acquisition.simulator import Simulator
    from bci_app.decoders.bundle import load_bundle, update_manifest
    from bci_app.decoders.manifest import thaw
    from bci_app.speech.evaluate import evaluate_speech_bundle, format_speech_report

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    sentences = vocabulary(args.n_sentences)
    params = {"snr": args.snr, "subject": 0, "sentences": sentences}
    if not args.evaluate_only:
        train(args, params)
    sessions = []
    for seed in args.test_seeds:
        session = Simulator("meg", "listening", seed=seed, **params).generate(args.test_duration)
        session.name = f"held-out seed {seed}"
        sessions.append(session)
    report = evaluate_speech_bundle(load_bundle(args.out), sessions, provider="cpu")
    print(format_speech_report(report))
    metrics = thaw(load_bundle(args.out).manifest.metrics or {})
    metrics["held_out"] = {
        "sessions": [
            f"Simulator('meg', 'listening', seed={s}, snr={args.snr})" for s in args.test_seeds
        ],
        "seconds_each": args.test_duration,
        "candidates": report["overall"]["candidates"],
        "segments": report["overall"]["segments"],
        # per session and mean [95 % t interval] over sessions (bci_app.stats)
        "per_session": report["overall"]["sessions"],
    }
    demo = {"simulator": {"modality": "meg", "task": "listening", **params}}
    update_manifest(args.out, {"metrics": metrics, "demo": demo})
    write_readme(args, report, len(json.loads((args.out / "candidates.json").read_text())["texts"]))
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"Wrote {args.out} ({size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
