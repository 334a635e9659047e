"""``bci-app train speech`` and ``bci-app candidates add``: the speech decoder's CLI commands.

``bci-app`` calls :func:`add_speech_commands` after
:func:`~bci_app.cli.train.add_train_export_commands`; it adds ``speech`` to the existing
``train`` subcommand and a ``candidates`` command. torch is imported only inside ``train speech``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bci_app._optional import import_optional
from bci_app.cli.train import _positive_int


def add_speech_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``train speech`` (also ``python -m models.speech_train``)."""
    parser.add_argument("recordings", nargs="+", metavar="RECORDING", help="listening recordings")
    parser.add_argument(
        "--audio",
        nargs="+",
        metavar="DIR",
        help="stimulus folder(s), one per recording (default: <name>_stimuli beside each file)",
    )
    parser.add_argument("--out", required=True, help="output folder: the decoder bundle")
    parser.add_argument("--config", choices=["small", "paper"], default=None)
    parser.add_argument("--epochs", type=_positive_int, help="maximum epochs (default 30)")
    parser.add_argument("--batch-size", type=_positive_int, help="windows per step (default 32)")
    parser.add_argument("--lr", type=float, help="peak learning rate (one-cycle)")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    parser.add_argument("--patience", type=_positive_int, help="early stopping patience (epochs)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--resume", help="checkpoint (or output folder) to continue from")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--picks", nargs="+", help="channel types or names")
    parser.add_argument("--subject", nargs="+", help="subject label of each recording")
    parser.add_argument("--name", help="decoder name (default: the output folder's name)")
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
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX bundle")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run_speech_train(args: argparse.Namespace) -> int:
    """Run ``train speech``; print a summary (rank 0)."""
    import_optional("torch")
    from models.speech_train import train_speech

    metrics = train_speech(
        args.recordings,
        args.out,
        audio_dirs=args.audio,
        config=args.config,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
        seed=args.seed,
        resume=args.resume,
        device=args.device,
        subject_ids=args.subject,
        picks=args.picks,
        name=args.name,
        audio_model=args.audio_model,
        audio_layers=args.audio_layers,
        export=not args.no_export,
        progress=not args.no_progress,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics, indent=2) if args.json else _summary(metrics))
    return 0


def _summary(m: dict[str, Any]) -> str:
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


def synthesize(text: str, directory: Path) -> Path:
    """Speak ``text`` with espeak-ng (en-us) into a WAV file; return its path."""
    from acquisition.simulator.speech import espeak_available

    if not espeak_available():
        raise RuntimeError(
            f"Cannot synthesize {text!r}: espeak-ng is not installed. Install it (apt-get install "
            "espeak-ng) or give WAV files."
        )
    path = directory / f"{abs(hash(text))}.wav"
    done = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "170", "-w", str(path), text],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"espeak-ng failed on {text!r}: {done.stderr.decode(errors='replace')}")
    return path


def candidate_features(
    bundle, items: list[str], audio_model: str | None = None
) -> tuple[list[str], np.ndarray]:
    """Texts and audio features of new candidates (WAV paths, or text to synthesize).

    The features come from the extractor the bundle was trained with (log-mel, or its local
    pretrained model, found at ``audio_model`` if it moved).
    """
    from bci_app.speech.audio import read_wav
    from bci_app.speech.extractors import AUDIO_RATE, features_from_manifest

    features = features_from_manifest(bundle.manifest, audio_model)
    window = bundle.manifest["window"]
    n_frames = round((window["audio_tmax"] - window["audio_tmin"]) * window["sfreq"])
    texts, mels = [], []
    with tempfile.TemporaryDirectory(prefix="bci-candidates-") as tmp:
        for item in items:
            is_file = item.lower().endswith(".wav")
            if is_file and not Path(item).is_file():
                raise FileNotFoundError(
                    f"Candidate audio file not found: '{item}'. Give WAV files that exist, or "
                    "words (without .wav) to synthesize."
                )
            path = Path(item) if is_file else synthesize(item, Path(tmp))
            audio = read_wav(path, AUDIO_RATE)
            trimmed = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
            if trimmed.size:
                audio = audio[trimmed[0] : trimmed[-1] + 1]
            # the segment starts audio_tmin before the onset, as in training
            start = np.array([window["audio_tmin"]])
            mels.append(features.segments(audio, start, n_frames)[0])
            texts.append(Path(item).stem.lower() if is_file else item.lower())
    return texts, np.stack(mels)


def cmd_candidates_add(args: argparse.Namespace) -> int:
    """Add candidates (WAV files or words to synthesize) to a speech bundle."""
    from bci_app.decoders.bundle import load_bundle
    from bci_app.decoders.runtime import OnnxRuntime
    from bci_app.speech.decoder import check_speech_bundle, load_candidates, save_candidates

    bundle = load_bundle(args.bundle)
    check_speech_bundle(bundle)
    texts, embeddings = load_candidates(bundle)
    new_texts, mels = candidate_features(bundle, list(args.items), args.audio_model)
    clash = sorted(
        {t for t in new_texts if t in texts} | {t for t in new_texts if new_texts.count(t) > 1}
    )
    if clash:
        raise ValueError(
            f"Invalid candidates: {clash} are already in the bundle '{bundle.name}' or given "
            "twice. Each candidate appears once; leave the duplicates out."
        )
    runtime = OnnxRuntime(bundle.graph_path("audio"), "cpu", warmup=0)
    new = runtime.run({"mel": mels.astype(np.float32)})["embedding"]
    save_candidates(bundle.path, texts + new_texts, np.concatenate([embeddings, new]))
    total = len(texts) + len(new_texts)
    print(f"Added {len(new_texts)} candidates to {bundle.path} ({total} in all).")
    return 0


def add_speech_commands(subparsers: Any, train_tasks: Any | None = None) -> None:
    """Add ``train speech`` (to the ``train`` command's tasks) and ``candidates add``.

    ``train_tasks`` is the ``add_subparsers`` action of ``bci-app train``; None finds it in the
    ``train`` parser that :func:`~bci_app.cli.train.add_train_export_commands` made.
    """
    if train_tasks is None:
        train = subparsers.choices["train"]
        train_tasks = next(a for a in train._actions if isinstance(a, argparse._SubParsersAction))
    speech = train_tasks.add_parser(
        "speech",
        help="speech decoder from listening recordings with word-onset markers",
        description="Train the contrastive speech decoder and write its bundle, checkpoint and "
        "report. Multi-GPU: torchrun --nproc_per_node=N -m models.speech_train REC... --out OUT",
    )
    add_speech_train_arguments(speech)
    speech.set_defaults(func=run_speech_train)
    if "evaluate" in subparsers.choices:
        subparsers.choices["evaluate"].add_argument(
            "--audio",
            nargs="+",
            metavar="DIR",
            help="speech bundles: stimulus folder per recording (default: <name>_stimuli)",
        )
        subparsers.choices["evaluate"].add_argument(
            "--audio-model",
            metavar="DIR",
            help="speech bundles: where their pretrained audio model lives now (if it moved)",
        )
    candidates = subparsers.add_parser("candidates", help="edit a speech bundle's candidate set")
    actions = candidates.add_subparsers(dest="candidates_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add words (synthesized with espeak-ng) or WAV files")
    add.add_argument("bundle", help="speech decoder bundle")
    add.add_argument("items", nargs="+", metavar="WORD_OR_WAV")
    add.add_argument(
        "--audio-model",
        metavar="DIR",
        help="where the bundle's pretrained audio model lives now (if it moved since training)",
    )
    add.set_defaults(func=cmd_candidates_add)
