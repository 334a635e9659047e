"""Regenerate the default typing decoder shipped at bci_app/data/bundles/typing-meg-small/.

Simulate -> train -> export -> evaluate, all seeded, so the bundle can be rebuilt and checked::

    .venv/bin/python scripts/make_default_bundle.py            # about 5-10 min on a CPU core
    .venv/bin/python scripts/make_default_bundle.py --quick    # a smaller run, for a smoke test

1. A calibration session of simulated 306-channel MEG typing (``Simulator("meg", "typing",
   snr=SNR, seed=TRAIN_SEED, sentence_split="calibration")``, subject 0: the same simulated
   subject as ``bci-app run``'s built-in stream, whose sessions use other seeds and type the
   sentence bank's *test* part, which no calibration session types).
2. ``models.training.train_typing`` trains the ``small`` Brain2Qwerty v1 on it (split by
   sentence, early stopping on validation CER) and exports the verified ONNX graphs, manifest
   and LM.
3. Only the bundle files (manifest, graphs, LM) are copied to the output folder; the checkpoints
   and training report stay in a temporary folder.
4. The bundle is evaluated on held-out sessions (seeds 2000-2007, which no training uses, typing
   test sentences only, so the overlap check finds none in training) with
   :func:`bci_app.typing.evaluate.evaluate_bundle`, the same code path as live decoding; the
   ablation table is printed and the CERs (overall, per session, and the mean with its 95 % t
   interval over sessions, :mod:`bci_app.stats`) are written into the manifest's
   ``metrics.held_out`` and the README.

Training runs on one thread with deterministic kernels, so a rerun with the same bci-app and
torch gives bit-identical graphs (checked with ``--quick``). Requires the ``train`` extra
(torch). Prints the table and the bundle size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bci_app" / "data" / "bundles" / "typing-meg-small"
NAME = "typing-meg-small"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults make the shipped bundle)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle folder to (re)write")
    p.add_argument("--modality", default="meg", choices=["meg", "eeg"], help="simulated sensors")
    p.add_argument("--snr", type=float, default=2.0, help="simulated SNR (bci-app run uses 2.0)")
    p.add_argument("--duration", type=float, default=900.0, help="calibration seconds")
    p.add_argument("--train-seed", type=int, default=100, help="calibration session seed")
    p.add_argument(
        "--test-seeds",
        type=int,
        nargs="+",
        default=list(range(2000, 2008)),
        help="held-out sessions (2000-2007: seeds no training script uses)",
    )
    p.add_argument("--test-duration", type=float, default=120.0, help="seconds per test session")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--quick", action="store_true", help="short run (smoke test, worse decoder)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: bit-identical reruns)")
    return p.parse_args(argv)


def per_session(report: dict, metric: str = "cer") -> dict[str, list[float]]:
    """One value per held-out session (recording) and variant."""
    return {
        variant: [r["summary"][metric][variant] for r in report["recordings"]]
        for variant in report["variants"]
    }


def write_readme(args: argparse.Namespace, report: dict) -> None:
    """Say in the bundle folder what it is, how it was made and how well it decodes."""
    from bci_app.stats import format_interval

    cer = {variant: format_interval(v) for variant, v in per_session(report).items()}
    overlap = report["overlap"]
    seen = overlap["n_seen"] if overlap["known"] else "unknown how many"
    command = "scripts/make_default_bundle.py" + (" --quick" if args.quick else "")
    (args.out / "README.md").write_text(
        f"# {NAME}\n\n"
        "Default typing decoder of `bci-app run`: the `small` Brain2Qwerty v1 trained on "
        f"{args.duration:g} s of simulated {args.modality.upper()} typing (subject 0, snr "
        f"{args.snr:g}, "
        f"session seed {args.train_seed}, training seed {args.seed}). Not a model of real "
        "brain data.\n\n"
        f"Regenerate with `.venv/bin/python {command}`.\n\n"
        f"CER on {len(args.test_seeds)} held-out simulated sessions (seeds "
        f"{', '.join(map(str, args.test_seeds))}, {args.test_duration:g} s each, snr "
        f"{args.snr:g}, sentences of the bank's test part), mean [95 % t interval] over "
        f"sessions: conv only {cer['conv']}, + transformer {cer['transformer']}, + LM "
        f"{cer['lm']}. {seen} of the {overlap['n_sentences']} scored sentences were in the "
        "calibration data (checked against the sentence keys training recorded).\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Simulate, train, export, evaluate; write the bundle to ``--out``."""
    args = parse_args(argv)
    if args.quick:
        args.duration, args.epochs, args.test_duration = 240.0, 8, 60.0
    import torch

    from acquisition.simulator import Simulator
    from bci_app.decoders.bundle import copy_bundle, load_bundle, update_manifest
    from bci_app.decoders.manifest import thaw
    from bci_app.stats import mean_interval
    from bci_app.typing.evaluate import evaluate_bundle, format_report
    from models.training import train_typing

    # One thread and deterministic kernels make reruns bit-identical (with 2 threads the
    # weights differed by up to 4e-3 between runs); on 2 shared cores it is also no slower.
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    print(
        f"Simulating {args.duration:g} s of {args.modality.upper()} typing (snr={args.snr:g}, "
        f"seed={args.train_seed})"
    )
    calibration = Simulator(
        args.modality, "typing", snr=args.snr, seed=args.train_seed, sentence_split="calibration"
    ).generate(args.duration)
    with tempfile.TemporaryDirectory(prefix="bci-default-bundle-") as tmp:
        trained = Path(tmp) / NAME
        metrics = train_typing(
            [calibration],
            trained,
            config="small",
            arch="v1",
            epochs=args.epochs,
            seed=args.seed,
            name=NAME,
            progress=sys.stderr.isatty(),
        )
        copy_bundle(trained, args.out)  # the bundle alone, not the checkpoints and report
    print(
        f"Trained in {metrics['train_seconds']:.0f} s ({metrics['epochs_run']} epochs): "
        f"test CER {metrics['test_cer']:.3f} (conv only {metrics['test_cer_conv']:.3f})"
    )
    held_out = {"snr": args.snr, "subject": 0, "sentence_split": "test"}
    sessions = [
        Simulator(args.modality, "typing", seed=seed, **held_out).generate(args.test_duration)
        for seed in args.test_seeds
    ]
    for seed, session in zip(args.test_seeds, sessions):
        session.name = f"held-out seed {seed}"
    report = evaluate_bundle(load_bundle(args.out), sessions, provider="cpu")
    print(format_report(report))
    metrics = thaw(load_bundle(args.out).manifest.metrics or {})
    metrics["held_out"] = {
        "sessions": [
            f"Simulator('{args.modality}', 'typing', snr={args.snr}, seed={s}, "
            "sentence_split='test')"
            for s in args.test_seeds
        ],
        "seconds_each": args.test_duration,
        "cer": report["overall"]["cer"],
        "cer_per_session": per_session(report),
        "cer_interval": {
            variant: dict(zip(("mean", "low", "high"), mean_interval(values)))
            for variant, values in per_session(report).items()
        },
        "wer": report["overall"]["wer"],
        "sentences_seen_in_training": report["overlap"]["n_seen"],
    }
    # what the built-in stream plays for this bundle: its subject and snr, held-out sentences
    demo = {"simulator": {"modality": args.modality, "task": "typing", **held_out}}
    update_manifest(args.out, {"metrics": metrics, "demo": demo})
    write_readme(args, report)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"Wrote {args.out} ({size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
