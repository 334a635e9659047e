"""``bci-app candidates add`` and the speech options of ``bci-app evaluate``.

``bci-app`` calls :func:`add_candidates_command`; ``evaluate``
(:func:`bci_app.cli.evaluate.add_evaluate_command`) takes its speech options from
:func:`add_speech_evaluate_arguments`. ``train speech`` lives with ``train typing`` in
:mod:`bci_app.cli.train`. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bci_app.decoders.bundle import Bundle


def add_speech_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options ``evaluate`` takes for speech bundles (stimulus folders, audio model)."""
    parser.add_argument(
        "--audio",
        nargs="+",
        metavar="DIR",
        help="speech bundles: stimulus folder per recording (default: <name>_stimuli)",
    )
    parser.add_argument(
        "--audio-model",
        metavar="DIR",
        help="speech bundles: where their pretrained audio model lives now (if it moved)",
    )


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
    bundle: Bundle, items: list[str], audio_model: str | None = None
) -> tuple[list[str], np.ndarray]:
    """Texts and audio features of new candidates (WAV paths, or text to synthesize).

    The features come from the extractor the bundle was trained with (log-mel, or its local
    pretrained model, found at ``audio_model`` if it moved).
    """
    from bci_app.speech.audio import read_wav
    from bci_app.speech.extractors import AUDIO_RATE, features_from_manifest

    window = bundle.manifest.window
    n_frames = window.audio_n_times if window is not None else None
    if n_frames is None:
        raise ValueError(
            f"Invalid bundle: '{bundle.name}' records no heard-audio span (window.audio_tmin and "
            "audio_tmax), so new candidates cannot be cut like its training segments. Give a "
            "bundle written by 'bci-app train speech'."
        )
    features = features_from_manifest(bundle.manifest, audio_model)
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
            start = np.array([window.audio_tmin])
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


def add_candidates_command(subparsers: Any) -> None:
    """Add ``candidates add BUNDLE WORD_OR_WAV... [--audio-model DIR]`` to ``bci-app``."""
    candidates = subparsers.add_parser("candidates", help="edit a speech bundle's candidate set")
    actions = candidates.add_subparsers(dest="candidates_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add words (synthesized with espeak-ng) or WAV files")
    add.add_argument("bundle", help="speech decoder bundle")
    add.add_argument(
        "items", nargs="+", metavar="WORD_OR_WAV", help="words to synthesize, or WAV files"
    )
    add.add_argument(
        "--audio-model",
        metavar="DIR",
        help="where the bundle's pretrained audio model lives now (if it moved since training)",
    )
    add.set_defaults(func=cmd_candidates_add)
