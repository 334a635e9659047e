"""``bci-app train typing|speech`` and ``bci-app export``.

torch and :mod:`models` are imported inside the commands, so building the parser (and every other
``bci-app`` command, the live path included) never imports them. ``bci-app`` calls
:func:`add_train_export_commands` (``evaluate`` is :mod:`bci_app.cli.evaluate`). This module is
also the entry point of multi-process training, which ``torchrun`` launches once per GPU::

    torchrun --nproc_per_node=N -m bci_app.cli.train typing RECORDING... --out OUT
    torchrun --nproc_per_node=N -m bci_app.cli.train speech RECORDING... --out OUT
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bci_app._argparse import ArgumentParser
from bci_app._optional import import_optional
from bci_app.cli._checks import positive_int
from bci_app.cli._signals import EXIT_STATUS, interrupt_on_sigterm, interruption

_PROG = "python -m bci_app.cli.train"


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every training command has: settings, resume, device, output switches."""
    parser.add_argument(
        "--lr",
        type=float,
        help="peak learning rate of the one-cycle schedule (default: by --config)",
    )
    parser.add_argument(
        "--weight-decay", type=float, help="AdamW weight decay (default: by --config)"
    )
    parser.add_argument(
        "--patience",
        type=positive_int,
        help="early-stopping patience in epochs (default: by --config)",
    )
    parser.add_argument("--seed", type=int, help="random seed (default: 0)")
    parser.add_argument("--resume", help="checkpoint (or output folder) to continue from")
    parser.add_argument(
        "--init",
        metavar="PRETRAINED_CHECKPOINT",
        help="fine-tune from a pretrained checkpoint (or its training folder) of the same "
        "architecture, config and channels: all weights are copied; a subject it was trained on "
        "keeps its own spatial-attention head and subject layer, a new subject starts from the "
        "mean of its subjects'",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--picks", nargs="+", help="channel types or names (default: all brain)")
    parser.add_argument("--subject", nargs="+", help="subject label of each recording")
    parser.add_argument("--name", help="decoder name (default: the output folder's name)")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX bundle")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the bundle, checkpoints and report of an earlier run in --out",
    )


#: What an earlier ``train`` or ``export`` leaves in its output folder: these names, and files
#: of these kinds (graphs, their external weights, the LM, candidates, sidecars).
_OUTPUT_ITEMS = ("manifest.json", "checkpoint.pt", "checkpoints", "report", "README.md")
_OUTPUT_SUFFIXES = (".onnx", ".data", ".npz", ".json", ".pt", ".md")


def check_output_folder(out: str, *, overwrite: bool, resume: str | None = None) -> None:
    """Refuse to train into a folder holding an earlier run, unless resuming it or ``overwrite``.

    With ``overwrite`` the earlier run's folder is removed (on rank 0), so nothing of it (graphs,
    epoch checkpoints, a README) is left beside the new one. A folder holding anything else is
    never removed.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"Cannot write the bundle to '{out}': it is a file. Give a folder.")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if resume is not None and folder.resolve() in (
        Path(resume).resolve(),
        *Path(resume).resolve().parents,
    ):
        return  # continuing the run that is in the folder
    earlier = [name for name in _OUTPUT_ITEMS if (folder / name).exists()]
    if not earlier:
        raise ValueError(
            f"Cannot write the bundle to '{out}': the folder holds other files. Give a new or "
            "empty folder."
        )
    if not overwrite:
        raise ValueError(
            f"Cannot write the bundle to '{out}': it holds an earlier run ({', '.join(earlier)}). "
            f"Give a new folder, pass --resume {out} to continue that run, or --overwrite to "
            "replace it."
        )
    others = sorted(
        p.name
        for p in folder.iterdir()
        if p.name not in _OUTPUT_ITEMS and not (p.is_file() and p.suffix in _OUTPUT_SUFFIXES)
    )
    if others:
        raise ValueError(
            f"Cannot replace the earlier run in '{out}': the folder also holds {others}, which "
            "no run writes. Move them away, or give a new folder."
        )
    if int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(folder)


#: What an export writes into its folder (a training run's checkpoints are not among them).
_BUNDLE_SUFFIXES = (".onnx", ".data", ".npz")


def check_export_folder(out: str, *, overwrite: bool) -> None:
    """Refuse to export into a folder holding a bundle, unless ``overwrite``.

    A training run's folder without a bundle (``train --no-export``) is the natural place of
    its export and is left as it is. With ``overwrite`` only the earlier bundle's files are
    removed: the checkpoint being exported may lie in the same folder.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"Cannot export the bundle to '{out}': it is a file. Give a folder.")
    if not folder.is_dir():
        return
    earlier = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and (p.name in ("manifest.json", "README.md") or p.suffix in _BUNDLE_SUFFIXES)
    )
    if not earlier:
        return
    if not overwrite:
        raise ValueError(
            f"Cannot export the bundle to '{out}': it holds a bundle "
            f"({', '.join(p.name for p in earlier)}). Give a new folder, or pass --overwrite to "
            "replace it."
        )
    for path in earlier:
        path.unlink()


def add_typing_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``train typing`` (recordings, output, model and training settings)."""
    parser.add_argument("recordings", nargs="+", metavar="RECORDING", help="XDF/FIF/EDF/BIDS files")
    parser.add_argument("--out", required=True, help="output folder: the decoder bundle")
    parser.add_argument(
        "--config", choices=["small", "paper"], default=None, help="model size (default: small)"
    )
    parser.add_argument(
        "--arch",
        choices=["v1", "v2"],
        default=None,
        help="v1 keystroke-locked, v2 CTC (default: v1)",
    )
    parser.add_argument("--epochs", type=positive_int, help="maximum epochs (default: 40)")
    parser.add_argument("--batch-size", type=positive_int, help="sentences per step (default: 4)")
    parser.add_argument(
        "--crop", type=float, help="v1: probability of cropping a sentence (default: by --config)"
    )
    parser.add_argument(
        "--text-pretrain",
        type=int,
        metavar="STEPS",
        help="v1: steps of the sentence transformer's pretraining on English text (default: "
        "4000; 0: off)",
    )
    _add_run_arguments(parser)


def add_speech_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``train speech`` (recordings, audio, output, settings)."""
    parser.add_argument("recordings", nargs="+", metavar="RECORDING", help="listening recordings")
    parser.add_argument(
        "--audio",
        nargs="+",
        metavar="DIR",
        help="stimulus folder(s), one per recording (default: <name>_stimuli beside each file)",
    )
    parser.add_argument("--out", required=True, help="output folder: the decoder bundle")
    parser.add_argument(
        "--config", choices=["small", "paper"], default=None, help="model size (default: small)"
    )
    parser.add_argument("--epochs", type=positive_int, help="maximum epochs (default: 30)")
    parser.add_argument("--batch-size", type=positive_int, help="windows per step (default: 32)")
    parser.add_argument(
        "--audio-model",
        metavar="DIR",
        help="local wav2vec2-family checkpoint folder (Hugging Face format, never downloaded) "
        "whose hidden states replace the log-mel audio features; needs 'bci-app[audio-models]'",
    )
    parser.add_argument(
        "--audio-layers",
        nargs="+",
        type=int,
        metavar="I",
        help="hidden states of --audio-model to average (default: the last 4 layers)",
    )
    _add_run_arguments(parser)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments both trainers take from the common options."""
    init = {"init": args.init} if args.init is not None else {}
    return dict(
        **init,
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
        seed=args.seed,
        resume=args.resume,
        device=args.device,
        subject_ids=args.subject,
        picks=args.picks,
        name=args.name,
        export=not args.no_export,
        progress=not args.no_progress,
    )


def run_train(args: argparse.Namespace) -> int:
    """Run ``train typing`` with parsed arguments; print a summary (rank 0 only)."""
    check_output_folder(args.out, overwrite=args.overwrite, resume=args.resume)
    import_optional("torch")
    from models.training import train_typing

    metrics = train_typing(
        args.recordings,
        args.out,
        config=args.config,
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        crop=args.crop,
        text_pretrain=args.text_pretrain,
        **_run_options(args),
    )
    _print_metrics(metrics, args.json, _typing_summary)
    return 0


def run_speech_train(args: argparse.Namespace) -> int:
    """Run ``train speech`` with parsed arguments; print a summary (rank 0 only)."""
    check_output_folder(args.out, overwrite=args.overwrite, resume=args.resume)
    import_optional("torch")
    from models.training import train_speech

    metrics = train_speech(
        args.recordings,
        args.out,
        audio_dirs=args.audio,
        config=args.config,
        epochs=args.epochs,
        batch_size=args.batch_size,
        audio_model=args.audio_model,
        audio_layers=args.audio_layers,
        **_run_options(args),
    )
    _print_metrics(metrics, args.json, _speech_summary)
    return 0


def _print_metrics(metrics: dict[str, Any], as_json: bool, summary) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics, indent=2) if as_json else summary(metrics))


def _typing_summary(m: dict[str, Any]) -> str:
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


def _speech_summary(m: dict[str, Any]) -> str:
    lines = [
        f"Trained in {m['train_seconds']:.1f} s: {m['epochs_run']} epochs (best "
        f"{m['best_epoch']}{', stopped early' if m['stopped_early'] else ''}), {m['device']}.",
    ]
    for key in ("val", "test"):
        lines.append(
            f"{key}: top-1 {m[f'{key}_top1']:.3f}, top-10 {m[f'{key}_top10']:.3f} among "
            f"N={m[f'{key}_n_candidates']} segments (chance {m[f'{key}_chance_top1']:.3f} / "
            f"{m[f'{key}_chance_top10']:.3f})"
        )
    lines.append(f"Candidates in the bundle: {m['n_bundle_candidates']} words")
    lines += [f"{k.capitalize()}: {v}" for k, v in m["paths"].items()]
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    """Export a training checkpoint (typing or speech) to a decoder bundle; print the ONNX check."""
    check_export_folder(args.out, overwrite=args.overwrite)
    import_optional("torch")
    from models.bundles import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, name=args.name)
    for role, report in result["reports"].items():
        print(
            f"{role}: {report['path']} max |onnxruntime - torch| = {report['max_abs_diff']:.3g} "
            f"(bound {report['atol']:g})"
        )
    print(f"Bundle written to {result['bundle'].path}")
    return 0


def _add_typing_command(tasks: Any) -> None:
    """``train typing``."""
    typing = tasks.add_parser(
        "typing",
        help="Brain2Qwerty typing decoder from recordings with keystroke markers",
        description="Train a Brain2Qwerty typing decoder and write its bundle, checkpoint and "
        "report. Multi-GPU: torchrun --nproc_per_node=N -m bci_app.cli.train typing "
        "RECORDING... --out OUT",
    )
    add_typing_arguments(typing)
    typing.set_defaults(func=run_train)


def _add_speech_command(tasks: Any) -> None:
    """``train speech``."""
    speech = tasks.add_parser(
        "speech",
        help="speech decoder from listening recordings with word-onset markers",
        description="Train the contrastive speech decoder and write its bundle, checkpoint and "
        "report. Multi-GPU: torchrun --nproc_per_node=N -m bci_app.cli.train speech "
        "RECORDING... --out OUT",
    )
    add_speech_arguments(speech)
    speech.set_defaults(func=run_speech_train)


def _add_train_tasks(parser: argparse.ArgumentParser) -> None:
    """The ``typing`` and ``speech`` subcommands of a training parser."""
    tasks = parser.add_subparsers(dest="train_task", metavar="TASK", required=True)
    _add_typing_command(tasks)
    _add_speech_command(tasks)


def add_train_export_commands(subparsers: Any) -> None:
    """Add ``train typing``, ``train speech`` and ``export`` to ``bci-app``'s subparsers."""
    train = subparsers.add_parser("train", help="train a decoder on calibration recordings")
    _add_train_tasks(train)

    export = subparsers.add_parser(
        "export", help="export a training checkpoint (typing or speech) to a decoder bundle"
    )
    export.add_argument("checkpoint", help="checkpoint.pt written by 'bci-app train TASK'")
    export.add_argument("--out", required=True, help="output folder: the decoder bundle")
    export.add_argument("--name", help="decoder name (default: the checkpoint's)")
    export.add_argument(
        "--overwrite", action="store_true", help="replace a bundle already in --out"
    )
    export.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m bci_app.cli.train`` (what ``torchrun`` launches)."""
    parser = ArgumentParser(
        prog=_PROG, description="Train a decoder (one process of a torchrun job, or alone)."
    )
    _add_train_tasks(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bci_app.cli.train TASK ...``: train, logging on rank 0 only."""
    args = build_parser().parse_args(argv)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(
        level=logging.INFO if main_rank else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    interrupt_on_sigterm()  # torchrun stops its workers with SIGTERM: same hint as Ctrl-C
    try:
        return args.func(args)
    except KeyboardInterrupt as err:
        what = interruption(err)
        print(
            f"{_PROG} {args.train_task}: interrupted ({what}); run the same command with "
            f"--resume {args.out} to continue from its last epoch checkpoint.",
            file=sys.stderr,
        )
        return EXIT_STATUS[what]
    except (ValueError, FileNotFoundError) as err:
        print(f"{_PROG} {args.train_task}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
