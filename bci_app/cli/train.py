"""``bci-app train typing`` and ``bci-app export``: the CLI commands that need torch.

torch and :mod:`models` are imported inside the commands, so building the parser (and every other
``bci-app`` command, the live path included) never imports them. ``bci-app`` calls
:func:`add_train_export_commands`; ``python -m models.train`` (which ``torchrun`` launches for
multi-GPU training) reuses :func:`add_train_arguments` and :func:`run_train`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from bci_app._optional import import_optional


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: use an integer >= 1") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: use an integer >= 1")
    return number


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``train typing`` (recordings, output, model and training settings)."""
    parser.add_argument("recordings", nargs="+", metavar="RECORDING", help="XDF/FIF/EDF/BIDS files")
    parser.add_argument("--out", required=True, help="output folder: the decoder bundle")
    parser.add_argument(
        "--config", choices=["small", "paper"], default=None, help="model size (default small)"
    )
    parser.add_argument(
        "--arch", choices=["v1", "v2"], default=None, help="v1 keystroke-locked (default), v2 CTC"
    )
    parser.add_argument("--epochs", type=_positive_int, help="maximum epochs (default 40)")
    parser.add_argument("--batch-size", type=_positive_int, help="sentences per step (default 4)")
    parser.add_argument("--lr", type=float, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    parser.add_argument("--patience", type=_positive_int, help="early-stopping patience (epochs)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--crop", type=float, help="v1: probability of cropping a sentence")
    parser.add_argument("--resume", help="checkpoint (or output folder) to continue from")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--picks", nargs="+", help="channel types or names (default: all brain)")
    parser.add_argument("--subject", nargs="+", help="subject label of each recording")
    parser.add_argument("--name", help="decoder name (default: the output folder's name)")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX bundle")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run_train(args: argparse.Namespace) -> int:
    """Run ``train typing`` with parsed arguments; print a summary (rank 0 only)."""
    import_optional("torch")
    from models.train import train_typing

    metrics = train_typing(
        args.recordings,
        args.out,
        config=args.config,
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
        seed=args.seed,
        crop=args.crop,
        resume=args.resume,
        device=args.device,
        subject_ids=args.subject,
        picks=args.picks,
        name=args.name,
        export=not args.no_export,
        progress=not args.no_progress,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics, indent=2) if args.json else _summary(metrics))
    return 0


def _summary(m: dict[str, Any]) -> str:
    conv = lambda key: f" (conv only {m[key]:.3f})" if key in m else ""  # noqa: E731
    lines = [
        f"Trained in {m['train_seconds']:.1f} s: {m['epochs_run']} epochs (best {m['best_epoch']}"
        f"{', stopped early' if m['stopped_early'] else ''}) on {m['world_size']} process(es), "
        f"{m['device']}.",
        f"Sentences train/val/test: {m['n_sentences']['train']}/{m['n_sentences']['val']}/"
        f"{m['n_sentences']['test']}; {m['n_windows']} keystroke windows, "
        f"{m['n_dropped_invalid']} dropped as invalid, {m['n_skipped_keys']} keys skipped.",
        f"Validation CER {m['val_cer']:.3f}{conv('val_cer_conv')}; test CER {m['test_cer']:.3f}"
        f"{conv('test_cer_conv')}; chance {m['test_cer_chance']:.3f}.",
    ]
    paths = m["paths"]
    if "bundle" in paths:
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in m["export_max_abs_diff"].items())
        lines.append(f"Bundle: {paths['bundle']} (max |onnxruntime - torch|: {diffs})")
    lines.append(f"Checkpoint: {paths['checkpoint']}")
    lines.append(f"Report: {paths['report']}")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    """Export a training checkpoint to a decoder bundle; print the ONNX check."""
    import_optional("torch")
    from models.bundle_export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, name=args.name)
    for role, report in result["reports"].items():
        print(
            f"{role}: {report['path']} max |onnxruntime - torch| = {report['max_abs_diff']:.3g} "
            f"(bound {report['atol']:g})"
        )
    print(f"Bundle written to {result['bundle'].path}")
    return 0


def add_train_export_commands(subparsers: Any) -> None:
    """Add ``train typing`` and ``export`` to ``bci-app``'s subparsers."""
    train = subparsers.add_parser("train", help="train a decoder on calibration recordings")
    tasks = train.add_subparsers(dest="train_task", metavar="TASK", required=True)
    typing = tasks.add_parser(
        "typing",
        help="Brain2Qwerty typing decoder from recordings with keystroke markers",
        description="Train a Brain2Qwerty typing decoder and write its bundle, checkpoint and "
        "report. Multi-GPU: torchrun --nproc_per_node=N -m models.train RECORDING... --out OUT",
    )
    add_train_arguments(typing)
    typing.set_defaults(func=run_train)

    export = subparsers.add_parser("export", help="export a training checkpoint to a bundle")
    export.add_argument("checkpoint", help="checkpoint.pt written by 'bci-app train'")
    export.add_argument("--out", required=True, help="output folder: the decoder bundle")
    export.add_argument("--name", help="decoder name (default: the checkpoint's)")
    export.set_defaults(func=cmd_export)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a decoder bundle on recordings: typing ablation table or speech retrieval."""
    from bci_app.decoders.bundle import load_bundle

    if load_bundle(args.bundle).task == "speech":
        from bci_app.speech.evaluate import run_speech_evaluate

        return run_speech_evaluate(args)
    from bci_app.typing.evaluate import evaluate_bundle, format_report, report_to_json

    report = evaluate_bundle(
        args.bundle, args.recordings, provider=args.provider, use_lm=not args.no_lm
    )
    print(report_to_json(report) if args.json else format_report(report))
    return 0


def add_evaluate_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate BUNDLE RECORDING... [--json] [--provider P] [--no-lm]``; return its parser."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a typing decoder bundle on recordings (CER/WER: conv, + transformer, + LM)",
    )
    p.add_argument("bundle", help="decoder bundle directory (from 'bci-app train' or export)")
    p.add_argument("recordings", nargs="+", metavar="RECORDING", help="recordings with key markers")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument(
        "--provider",
        choices=["auto", "cpu", "cuda", "tensorrt"],
        default="auto",
        help="onnxruntime provider (default auto)",
    )
    p.add_argument("--no-lm", action="store_true", help="decode without the language model")
    p.set_defaults(func=cmd_evaluate)
    return p
