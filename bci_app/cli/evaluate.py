"""``bci-app evaluate BUNDLE RECORDING...``: score a decoder bundle on recordings.

A typing bundle gets the ablation table of :mod:`bci_app.typing.evaluate` (CER/WER of the conv
head, + transformer, + LM); a speech bundle the retrieval report of :mod:`bci_app.speech.evaluate`
(its options, stimulus folders and the audio model, come from
:func:`bci_app.cli.speech.add_speech_evaluate_arguments`). ``bci-app`` calls
:func:`add_evaluate_command`. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bci_app.cli.speech import add_speech_evaluate_arguments


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a decoder bundle on recordings: typing ablation table or speech retrieval."""
    from bci_app.decoders.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    if bundle.task == "speech":
        from bci_app.speech.evaluate import evaluate_speech_bundle, format_speech_report

        report = evaluate_speech_bundle(
            bundle,
            args.recordings,
            audio_dirs=args.audio,
            provider=args.provider,
            audio_model=args.audio_model,
        )
        print(json.dumps(report, indent=2) if args.json else format_speech_report(report))
        return 0
    from bci_app.typing.evaluate import evaluate_bundle, format_report, report_to_json

    report = evaluate_bundle(bundle, args.recordings, provider=args.provider, use_lm=not args.no_lm)
    print(report_to_json(report) if args.json else format_report(report))
    return 0


def add_evaluate_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate BUNDLE RECORDING... [--json] [--provider P] [--no-lm] [speech options]``.

    Returns
    -------
    parser : argparse.ArgumentParser
        The ``evaluate`` parser.
    """
    parser = subparsers.add_parser(
        "evaluate",
        help="score a decoder bundle on recordings (typing: CER/WER of conv, + transformer, + LM; "
        "speech: top-1/top-10 retrieval)",
    )
    parser.add_argument("bundle", help="decoder bundle directory (from 'bci-app train' or export)")
    parser.add_argument(
        "recordings",
        nargs="+",
        metavar="RECORDING",
        help="recordings with key markers (typing) or word markers (speech)",
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument(
        "--provider",
        choices=["auto", "cpu", "cuda", "tensorrt"],
        default="auto",
        help="onnxruntime provider (auto: CUDA where there is a GPU)",
    )
    parser.add_argument(
        "--no-lm", action="store_true", help="typing bundles: decode without the language model"
    )
    add_speech_evaluate_arguments(parser)
    parser.set_defaults(func=cmd_evaluate)
    return parser
