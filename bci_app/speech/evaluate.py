"""Offline evaluation of a speech bundle: retrieval top-1/top-10 per word and per recording.

Each recording goes through the bundle's preprocessing and its word-onset windows
(:func:`~bci_app.speech.decoder.make_windower`, the live code path); the
:class:`~bci_app.speech.decoder.SpeechDecoder` embeds every valid window. Two scores:

- ``segments`` (the paper's protocol; needs the recording's stimulus audio: ``--audio`` or
  ``<name>_stimuli/`` beside it, or a simulated recording's ground truth): each window's own 3 s
  audio segment (log-mel through the bundle's ``audio`` graph) ranked among the N segments of all
  word windows of that recording;
- ``candidates`` (what live decoding shows): the bundle's candidate set ranked, correct when the
  candidate's text is the heard word; words missing from the set count as errors (coverage says
  how many).

Chance is ``k / N`` for top-k. Per-word tables pool all recordings. With several recordings
(sessions), ``overall["sessions"]`` gives each score's mean over them with its 95 % t interval
(:mod:`bci_app.stats`): the figure to quote, with how many sessions it rests on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.recording import Recording, parse_marker
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.decoders.manifest import REEXPORT
from bci_app.decoders.runtime import OnnxRuntime
from bci_app.processing.preprocessing import preprocess_recording
from bci_app.speech.decoder import (
    SpeechDecoder,
    bundle_window,
    check_speech_bundle,
    make_windower,
    preprocess_config,
    retrieval_ranks,
)
from bci_app.speech.extractors import AudioFeatures, features_from_manifest
from bci_app.speech.heard import audio_track
from bci_app.stats import format_interval, mean_interval

TOP_K = (1, 10)
#: Scores summarised over sessions, per mode.
SESSION_SCORES = ("top1", "chance_top1", "top10", "chance_top10")


def _read(item: Recording | str | Path) -> tuple[Recording, str]:
    if isinstance(item, Recording):
        return item, item.name
    from acquisition.io import read_recording

    return read_recording(item), str(item)


def _topk(ranks: np.ndarray, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n_windows": len(ranks), "n_candidates": int(n)}
    for k in TOP_K:
        out[f"top{k}"] = float(np.mean(ranks < k)) if len(ranks) else float("nan")
        out[f"chance_top{k}"] = min(k, n) / n if n else float("nan")
    return out


def word_windows(bundle: Bundle, recording: Recording, label: str):
    """Windows of a recording locked to its ``word:`` markers, preprocessed as the bundle says."""
    bundle.check_stream(recording.channels, recording.sfreq, stream_name=f"'{label}'")
    if not recording.markers_of("word"):
        raise ValueError(
            f"Invalid recording '{label}': it has no word-onset markers ('word:<w>'); a speech "
            "decoder is evaluated on listening sessions."
        )
    windower = make_windower(bundle)
    processed = preprocess_recording(recording, preprocess_config(bundle))
    windows = windower.push_markers(recording.markers) + windower.push_data(*processed)
    windower.finish()
    return [w for w in windows if w.valid], len(windows)


def segment_audio_embeddings(
    bundle: Bundle,
    audio_graph: OnnxRuntime,
    features: AudioFeatures,
    recording: Recording,
    label: str,
    audio_dir: str | Path | None,
    windows: list,
) -> np.ndarray:
    """Audio-graph embeddings of the 3 s heard segment of each word window."""
    track = audio_track(recording, label, audio_dir)
    window = bundle_window(bundle)
    n = window.audio_n_times
    if n is None:
        raise ValueError(
            f"Invalid bundle: '{bundle.name}' ({bundle.path}) has no heard audio span "
            f"(window.audio_tmin, window.audio_tmax) in its manifest, which the segment scores "
            f"need. {REEXPORT}"
        )
    starts = np.array([w.marker.timestamp for w in windows]) - track.origin + window.audio_tmin
    mels = features.segments(track.audio, starts, n)
    return np.concatenate(
        [audio_graph.run({"mel": mels[i : i + 64]})["embedding"] for i in range(0, len(mels), 64)]
    )


def evaluate_speech_bundle(
    bundle: Bundle | str | Path,
    recordings: Sequence[Recording | str | Path],
    *,
    audio_dirs: Sequence[str | Path | None] | None = None,
    provider: str = "auto",
    audio_model: str | Path | None = None,
) -> dict[str, Any]:
    """Score a speech bundle on listening recordings (module docstring); return the report.

    ``audio_model``: the folder of the bundle's pretrained audio model, if it moved since export.
    """
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    check_speech_bundle(bundle)
    if not recordings:
        raise ValueError("Invalid value for 'recordings': give at least one recording to score.")
    audio_dirs = list(audio_dirs) if audio_dirs else [None] * len(recordings)
    if len(audio_dirs) != len(recordings):
        raise ValueError(
            f"Invalid value for 'audio': {len(audio_dirs)} folders for {len(recordings)} "
            "recordings; give one per recording."
        )
    decoder = SpeechDecoder(bundle, provider=provider)
    audio_graph = OnnxRuntime(bundle.graph_path("audio"), provider, warmup=0)
    features = features_from_manifest(bundle.manifest, audio_model)
    index = {t: i for i, t in enumerate(decoder.texts)}
    per_recording, seg_all, cand_all, words_all = [], [], [], []
    for item, audio_dir in zip(recordings, audio_dirs):
        recording, label = _read(item)
        windows, n_cut = word_windows(bundle, recording, label)
        words = [parse_marker(w.marker.value)[1].lower() for w in windows]
        brain = decoder.embed(np.stack([w.data for w in windows]))
        order = np.argsort(-(brain @ decoder.embeddings.T), axis=1, kind="stable")
        target = np.array([index.get(w, -1) for w in words])
        hit = order == target[:, None]
        cand = np.where(hit.any(axis=1), hit.argmax(axis=1), len(decoder.texts))
        entry = {"recording": label, "n_invalid": n_cut - len(windows)}
        entry["candidates"] = _topk(cand, decoder.n_candidates)
        entry["candidates"]["coverage"] = float(np.mean(target >= 0))
        try:
            audio = segment_audio_embeddings(
                bundle, audio_graph, features, recording, label, audio_dir, windows
            )
            seg = retrieval_ranks(brain, audio)
            entry["segments"] = _topk(seg, len(windows))
            seg_all.append(seg)
        except FileNotFoundError as err:
            entry["segments"] = {"skipped": str(err)}
            seg = np.full(len(windows), -1)
        per_recording.append(entry)
        cand_all.append(cand)
        words_all += list(zip(words, seg.tolist(), cand.tolist()))
    segments = {}
    if seg_all:
        segments = {
            "top1": float(np.mean([np.mean(s < 1) for s in seg_all])),
            "top10": float(np.mean([np.mean(s < 10) for s in seg_all])),
            "chance_top10": float(np.mean([min(10, len(s)) / len(s) for s in seg_all])),
            "n_recordings": len(seg_all),
        }
    overall = {"candidates": _topk(np.concatenate(cand_all), decoder.n_candidates)}
    return {
        "bundle": bundle.name,
        "provider": decoder._brain.provider,
        "overall": {**overall, "segments": segments, "sessions": session_summary(per_recording)},
        "per_word": _per_word(words_all),
        "recordings": per_recording,
    }


def session_summary(per_recording: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95 % t interval over recordings of each score (top-1/top-10 and their chance).

    Parameters
    ----------
    per_recording : sequence of dict
        ``report["recordings"]`` of :func:`evaluate_speech_bundle`.

    Returns
    -------
    summary : dict
        Per mode (``candidates``, ``segments`` where scored): ``n`` recordings, ``values`` (one
        per recording) and ``mean``/``low``/``high`` per score of :data:`SESSION_SCORES` (the
        bounds are None for a single recording).
    """
    summary: dict[str, Any] = {}
    for mode in ("candidates", "segments"):
        scored = [entry[mode] for entry in per_recording if "top10" in entry[mode]]
        if not scored:
            continue
        values = {key: [r[key] for r in scored] for key in SESSION_SCORES}
        summary[mode] = {"n": len(scored), "values": values}
        for key, column in values.items():
            mean, low, high = mean_interval(column)
            bounds = (low, high) if len(column) > 1 else (None, None)  # JSON has no NaN
            summary[mode][key] = {"mean": mean, "low": bounds[0], "high": bounds[1]}
    return summary


def format_session_summary(report: dict[str, Any]) -> list[str]:
    """Lines "mode: top-1 mean [95 % interval] (n=N) (chance ...), top-10 ..." over sessions."""
    lines = []
    for mode, summary in report["overall"].get("sessions", {}).items():
        values = summary["values"]
        cells = [
            f"top-{k} {format_interval(values[f'top{k}'])} (chance "
            f"{np.mean(values[f'chance_top{k}']):.3f})"
            for k in TOP_K
        ]
        lines.append(f"  {mode}: " + ", ".join(cells))
    return lines


def _per_word(rows: list[tuple[str, int, int]]) -> dict[str, dict[str, float]]:
    table: dict[str, list[tuple[int, int]]] = {}
    for word, seg, cand in rows:
        table.setdefault(word, []).append((seg, cand))
    out = {}
    for word, pairs in sorted(table.items()):
        seg = np.array([p[0] for p in pairs])
        cand = np.array([p[1] for p in pairs])
        out[word] = {"n": len(pairs), "candidates_top10": float(np.mean(cand < 10))}
        if (seg >= 0).all():
            out[word]["segments_top10"] = float(np.mean(seg < 10))
    return out


def format_speech_report(report: dict[str, Any]) -> str:
    """A short text table of a speech evaluation report."""
    lines = [f"Speech decoder '{report['bundle']}' ({report['provider']})"]
    for entry in report["recordings"]:
        lines.append(f"{entry['recording']}:")
        for mode in ("segments", "candidates"):
            r = entry[mode]
            if "skipped" in r:
                lines.append(f"  {mode}: skipped ({r['skipped'][:80]})")
                continue
            extra = f", coverage {r['coverage']:.2f}" if "coverage" in r else ""
            lines.append(
                f"  {mode}: top-1 {r['top1']:.3f} (chance {r['chance_top1']:.3f}), top-10 "
                f"{r['top10']:.3f} (chance {r['chance_top10']:.3f}) among N={r['n_candidates']}"
                f", {r['n_windows']} windows{extra}"
            )
    if len(report["recordings"]) > 1:
        lines.append(
            f"Over the {len(report['recordings'])} recordings (mean [95 % t interval] of the "
            "per-recording scores):"
        )
        lines += format_session_summary(report)
    words = sorted(report["per_word"].items(), key=lambda kv: -kv[1]["n"])[:10]
    lines.append("Most frequent words (n, segments top-10, candidates top-10):")
    lines += [
        f"  {w}: {r['n']}, {r.get('segments_top10', float('nan')):.2f}, {r['candidates_top10']:.2f}"
        for w, r in words
    ]
    return "\n".join(lines)
