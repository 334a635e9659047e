"""Offline evaluation of a typing bundle on recordings: the paper's ablation table, CER and WER.

Every recording goes through the bundle's own preprocessing (the same :class:`Preprocessor` code
and scaler statistics as live), keystroke windows are cut by the live windower
(:func:`~bci_app.processing.windowing.epochs_from_recording`), and each sentence is decoded by the
very
methods the live session calls (``start_sentence``, ``add_window`` per keystroke,
``end_sentence``), so the text equals what live decoding of a replay gives.

Sentences are the spans between ``sentence_start`` and ``sentence_end`` markers; keys outside any
span are grouped by pauses (as ``bci-app train`` groups them). v2 decodes each sentence's
continuous data from 0.5 s before its first key to 0.5 s after its last, the span it trained on.
The reference of a sentence is what was *typed* (its key markers mapped onto the 29-class
alphabet, keys without a class left out), since that is what a keystroke decoder can recover;
the displayed sentence (``target``) is reported alongside.
CER and WER are computed per sentence, then averaged per recording and over all sentences
(Brain2Qwerty's convention); the per-recording means also get their mean over sessions with a
95 % t interval (:mod:`bci_app.stats`), and sentences the bundle was trained on are reported
(``overlap``, from the sentence keys training records in the manifest), for three variants of
v1: ``conv`` (conv-only argmax), ``transformer`` (argmax after the sentence transformer) and
``lm`` (beam search with the LM); v2 reports ``greedy`` (best-path CTC) and ``lm`` (prefix beam
with the LM). Top-1/top-5 accuracy is per decoded keystroke. Invalid windows (NaN stretches,
gaps) are skipped and counted; their keys still count in the reference.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.recording import Marker, Recording, parse_marker
from acquisition.simulator.sentences import sentence_key
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.processing.preprocessing import preprocess_recording
from bci_app.processing.windowing import epochs_from_recording
from bci_app.stats import format_interval, mean_interval
from bci_app.typing.alphabet import DISPLAY_CHARS, cer, wer
from bci_app.typing.keystroke import (
    CTCDecoder,
    KeystrokeDecoder,
    check_typing_bundle,
    key_class,
    make_windower,
    open_decoder,
    preprocess_config,
)

VARIANTS = {
    "brain2qwerty_v1": ("conv", "transformer", "lm"),
    "brain2qwerty_v2": ("greedy", "lm"),
}
LABELS = {"conv": "conv only", "transformer": "+ transformer", "lm": "+ LM", "greedy": "CTC greedy"}
#: Keys this many seconds apart start a new sentence when no sentence markers say (as training).
SENTENCE_PAUSE_S = 2.0
#: v2: continuous data decoded around a sentence's keys, seconds each side (as training).
SPAN_MARGIN_S = 0.5


@dataclass
class SentenceSpan:
    """A sentence of a recording: the text shown (None when grouped by pauses) and its keys."""

    target: str | None
    keys: list[Marker] = field(default_factory=list)


def sentence_spans(markers: Sequence[Marker]) -> list[SentenceSpan]:
    """Group key markers into sentences, as training groups them.

    A key belongs to the sentence whose ``sentence_start`` precedes it when no ``sentence_end``
    lies between them (a start without an end lasts until the next start); the other keys are
    grouped by pauses longer than :data:`SENTENCE_PAUSE_S`. Sentences come out in time order.
    """
    spans: list[SentenceSpan] = []
    current: SentenceSpan | None = None
    loose: list[Marker] = []
    for marker in sorted(markers, key=lambda m: m.timestamp):
        kind, payload = parse_marker(marker.value)
        if kind == "sentence_start":
            current = SentenceSpan(payload)
            spans.append(current)
        elif kind == "sentence_end":
            current = None
        elif kind == "key":
            (current.keys if current is not None else loose).append(marker)
    for i, marker in enumerate(loose):
        if i == 0 or marker.timestamp - loose[i - 1].timestamp > SENTENCE_PAUSE_S:
            spans.append(SentenceSpan(None))
        spans[-1].keys.append(marker)
    spans = [span for span in spans if span.keys]
    return sorted(spans, key=lambda span: span.keys[0].timestamp)


def _typed_text(keys: Sequence[Marker]) -> str:
    classes = [key_class(m.value) for m in keys]
    return "".join(DISPLAY_CHARS[c] for c in classes if c is not None)


def _read(recording: Recording | str | Path) -> tuple[Recording, str]:
    if isinstance(recording, Recording):
        return recording, recording.name
    from acquisition.io import read_recording

    return read_recording(recording), str(recording)


def _check_keys(recording: Recording, label: str) -> None:
    if recording.markers_of("key"):
        return
    kinds = Counter(parse_marker(m.value)[0] for m in recording.markers)
    found = ", ".join(f"{k} ({n})" for k, n in kinds.most_common(8)) or "none at all"
    raise ValueError(
        f"Invalid recording '{label}': it has no keystroke markers ('key:<c>'), so there is "
        f"nothing to decode or score. Markers found: {found}. Record with the keystroke marker "
        "stream (or give the recording that has it)."
    )


def _scores(variants: dict[str, str], typed: str) -> dict[str, dict[str, float]]:
    if not typed.strip():
        return {"cer": {}, "wer": {}}
    return {
        "cer": {v: cer(text, typed) for v, text in variants.items()},
        "wer": {v: wer(text, typed) for v, text in variants.items()},
    }


def _topk_hits(log_probs: np.ndarray | None, classes: list[int]) -> dict[str, int]:
    if log_probs is None or not classes:
        return {"top1": 0, "top5": 0}
    rank = (log_probs > log_probs[np.arange(len(classes)), classes][:, None]).sum(axis=1)
    return {"top1": int((rank < 1).sum()), "top5": int((rank < 5).sum())}


def _decode_v1(decoder: KeystrokeDecoder, recording: Recording, spans, timings) -> list[dict]:
    windower = make_windower(decoder.bundle)
    windows = epochs_from_recording(recording, preprocess_config(decoder.bundle), windower)
    span_of = {(m.timestamp, m.value): i for i, s in enumerate(spans) for m in s.keys}
    grouped: list[list] = [[] for _ in spans]
    for window in windows:
        index = span_of.get((window.marker.timestamp, window.marker.value))
        if index is not None:
            grouped[index].append(window)
    sentences = []
    for span, group in zip(spans, grouped):
        decoder.start_sentence(span.target)
        classes = []
        for window in group:
            t0 = time.perf_counter()
            event = decoder.add_window(window)
            if event is not None:
                timings.append(time.perf_counter() - t0)
                classes.append(key_class(window.marker.value))
        decoder.end_sentence(span.keys[-1].timestamp)
        result = decoder.last_sentence
        hits = {
            "conv": _topk_hits(result.conv_log_probs, classes),
            "transformer": _topk_hits(result.log_probs, classes),
        }
        sentences.append(_sentence_entry(span, result, len(span.keys) - len(group), hits))
    return sentences


def _decode_v2(decoder: CTCDecoder, recording: Recording, spans, timings) -> list[dict]:
    processed = preprocess_recording(recording, preprocess_config(decoder.bundle))
    margin = round(SPAN_MARGIN_S * decoder.sfreq)
    sentences = []
    for span in spans:
        first, last = np.searchsorted(
            processed.timestamps, [span.keys[0].timestamp, span.keys[-1].timestamp]
        )
        inside = slice(max(0, int(first) - margin), int(last) + margin)
        data, stamps = processed.data[inside], processed.timestamps[inside]
        invalid = not processed.valid[inside].all() or len(stamps) == 0
        decoder.start_sentence(span.target)
        if not invalid:
            for start in range(0, len(stamps), decoder.hop):
                t0 = time.perf_counter()
                chunk = slice(start, start + decoder.hop)
                decoder.add_data(data[chunk], stamps[chunk])
                timings.append(time.perf_counter() - t0)
        decoder.end_sentence(span.keys[-1].timestamp)
        entry = _sentence_entry(span, decoder.last_sentence, 0, {})
        entry["n_skipped"] = len(span.keys) if invalid else 0
        sentences.append(entry)
    return sentences


def _sentence_entry(span: SentenceSpan, result, n_dropped: int, hits: dict) -> dict:
    typed = _typed_text(span.keys)
    return {
        "target": span.target,
        "typed": typed,
        "texts": dict(result.variants),
        **_scores(result.variants, typed),
        "n_keys": len(typed),
        "n_decoded": len(result.log_probs) if result.conv_log_probs is not None else None,
        "n_skipped": result.n_skipped,
        "n_dropped": n_dropped,
        "n_ignored": result.n_ignored,
        "topk_hits": hits,
    }


def _summary(sentences: list[dict], variants: Sequence[str]) -> dict[str, Any]:
    scored = [s for s in sentences if s["cer"]]
    out: dict[str, Any] = {"n_sentences": len(sentences), "n_scored": len(scored)}
    for key in ("n_keys", "n_skipped", "n_dropped", "n_ignored"):
        out[key] = int(sum(s[key] for s in sentences))
    for metric in ("cer", "wer"):
        out[metric] = {
            v: float(np.mean([s[metric][v] for s in scored])) if scored else math.nan
            for v in variants
        }
    decoded = sum(s["n_decoded"] or 0 for s in sentences)
    out["topk"] = {}
    if decoded:
        for model in ("conv", "transformer"):
            out["topk"][model] = {
                k: sum(s["topk_hits"][model][k] for s in sentences) / decoded
                for k in ("top1", "top5")
            }
    return out


def evaluate_bundle(
    bundle: Bundle | str | Path,
    recordings: Sequence[Recording | str | Path],
    *,
    provider: str = "auto",
    use_lm: bool = True,
) -> dict[str, Any]:
    """Decode recordings with a typing bundle and score them against what was typed.

    Parameters
    ----------
    bundle : Bundle | path
        A typing bundle (v1 or v2).
    recordings : sequence of Recording | path
        Recordings with ``key:<c>`` markers (any format :func:`acquisition.io.read_recording`
        reads), on the bundle's channels and rate.
    provider : "auto" | "cpu" | "cuda" | "tensorrt"
        onnxruntime provider.
    use_lm : bool
        Fuse the bundle's LM (the ``lm`` variant then equals the LM-free best path if False).

    Returns
    -------
    report : dict
        ``bundle``, ``arch``, ``variants``, ``provider``, ``overall`` (over all sentences),
        ``sessions`` (per-recording CER/WER of each variant with their mean and 95 % t interval,
        :func:`session_intervals`), ``overlap`` (evaluated sentences the bundle was trained on,
        :func:`training_overlap`), ``recordings`` (each with its ``summary`` and per-sentence
        entries: texts, CER/WER per variant, counts), and ``latency_ms`` (p50/p99 of the
        decoder's per-keystroke step, v2: per hop).
    """
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    arch = check_typing_bundle(bundle)
    if not recordings:
        raise ValueError("Invalid value for 'recordings': give at least one recording to score.")
    decoder = open_decoder(bundle, provider=provider, use_lm=use_lm)
    variants = VARIANTS[arch]
    per_recording, everything, timings = [], [], []
    for item in recordings:
        recording, label = _read(item)
        bundle.check_stream(recording.channels, recording.sfreq, stream_name=f"'{label}'")
        _check_keys(recording, label)
        spans = sentence_spans(recording.markers)
        decode = _decode_v1 if arch == "brain2qwerty_v1" else _decode_v2
        sentences = decode(decoder, recording, spans, timings)
        everything += sentences
        per_recording.append(
            {"recording": label, "summary": _summary(sentences, variants), "sentences": sentences}
        )
    latency = {}
    if timings:
        p50, p99 = np.percentile(np.array(timings) * 1e3, [50, 99])
        latency = {"n": len(timings), "p50": float(p50), "p99": float(p99)}
    return {
        "bundle": bundle.name,
        "arch": arch,
        "variants": list(variants),
        "provider": decoder.active_provider,
        "use_lm": decoder.lm is not None,
        "overall": _summary(everything, variants),
        "sessions": session_intervals(per_recording, variants),
        "overlap": training_overlap(bundle, everything),
        "recordings": per_recording,
        "latency_ms": latency,
    }


def session_intervals(per_recording: list[dict], variants: Sequence[str]) -> dict[str, Any]:
    """Per-session CER/WER of each variant, their mean and 95 % t interval (:mod:`bci_app.stats`).

    A session is one recording; those without a scored sentence are left out (``n`` says how
    many count). The interval is NaN for a single session.
    """
    scored = [r for r in per_recording if r["summary"]["n_scored"]]
    out: dict[str, Any] = {"n": len(scored), "recordings": [r["recording"] for r in scored]}
    for metric in ("cer", "wer"):
        out[metric] = {}
        for variant in variants:
            values = [r["summary"][metric][variant] for r in scored]
            mean, low, high = mean_interval(values) if values else (math.nan,) * 3
            out[metric][variant] = {"values": values, "mean": mean, "low": low, "high": high}
    return out


def training_overlap(bundle: Bundle, sentences: list[dict]) -> dict[str, Any]:
    """Which scored sentences the bundle was trained on (its ``provenance.training_sentences``).

    A sentence is identified by :func:`acquisition.simulator.sentences.sentence_key` of the
    sentence shown (else of what was typed). ``known`` is False for a bundle that does not
    record its training sentences (trained before they were recorded): overlap unchecked.
    """
    provenance = bundle.manifest.provenance
    keys = None if provenance is None else provenance.extra.get("training_sentences")
    texts = [s["target"] if s["target"] is not None else s["typed"] for s in sentences]
    if keys is None:
        return {"known": False, "n_sentences": len(texts), "n_seen": None, "seen": []}
    trained = set(keys)
    hits = [t for t in texts if sentence_key(t) in trained]
    return {
        "known": True,
        "n_sentences": len(texts),
        "n_seen": len(hits),
        "seen": sorted(set(hits)),
    }


def report_to_json(report: dict[str, Any]) -> str:
    """Return the report as strict JSON (NaN, e.g. a CER with no scored sentence, as null)."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(report), indent=2, allow_nan=False)


def format_report(report: dict[str, Any]) -> str:
    """Return the ablation table (CER and WER per variant, top-k) of :func:`evaluate_bundle`."""
    variants = report["variants"]
    head = [f"CER {LABELS[v]}" for v in variants] + [f"WER {LABELS[v]}" for v in variants]
    head += ["top-1", "top-5"] if report["arch"] == "brain2qwerty_v1" else []
    width = max(24, *(len(r["recording"]) for r in report["recordings"]))
    lines = [
        f"Decoder '{report['bundle']}' ({report['arch']}) on {report['provider']}",
        f"{'recording':<{width}} {'sent':>5} {'keys':>6} {'skip':>5} "
        + " ".join(f"{h:>17}" for h in head),
    ]
    rows = [(r["recording"], r["summary"]) for r in report["recordings"]]
    for label, s in [*rows, ("overall", report["overall"])]:
        values = [s["cer"][v] for v in variants] + [s["wer"][v] for v in variants]
        if report["arch"] == "brain2qwerty_v1":
            top = s["topk"].get("transformer", {})
            values += [top.get("top1", math.nan), top.get("top5", math.nan)]
        lines.append(
            f"{label:<{width}} {s['n_sentences']:>5} {s['n_keys']:>6} {s['n_skipped']:>5} "
            + " ".join(f"{v:>17.3f}" for v in values)
        )
    lines += _interval_lines(report)
    latency = report.get("latency_ms")
    if latency:
        lines.append(
            f"decoder step latency: p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms "
            f"over {latency['n']} steps"
        )
    return "\n".join(lines)


def _interval_lines(report: dict[str, Any]) -> list[str]:
    """The mean CER per variant over sessions with its interval, and the overlap warning."""
    lines = []
    sessions = report.get("sessions")
    if sessions and sessions["n"]:
        shown = []
        for variant in report["variants"]:
            entry = sessions["cer"][variant]
            shown.append(f"{LABELS[variant]} {format_interval(entry['values'])}")
        lines.append("CER mean over sessions [95 % t interval]: " + "; ".join(shown))
    overlap = report.get("overlap")
    if overlap and not overlap["known"]:
        lines.append(
            "Note: this bundle does not record its training sentences, so whether these "
            "sentences were trained on is unchecked."
        )
    elif overlap and overlap["n_seen"]:
        lines.append(
            f"WARNING: {overlap['n_seen']} of {overlap['n_sentences']} evaluated sentences were in "
            "the bundle's training data, so these figures are NOT held-out. Evaluate on "
            "sessions of other sentences (bci-app simulate --sentences test)."
        )
    return lines
