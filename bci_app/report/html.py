"""Write a :class:`~bci_app.report.data.SessionRecord` as one self-contained HTML file.

Figures are PNGs embedded as base64 ``data:`` URIs and the style sheet is inline, so the file
needs nothing beside it: a lab keeps it with the recording. It is written to a temporary file
first and renamed, so a failed report never leaves half a file.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from bci_app.report import figures
from bci_app.report.data import TOTAL_STAGE, ReportError, SessionRecord

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#212121;
  background:#fafafa;font-size:15px;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 10px;border-bottom:2px solid
  #e0e0e0;padding-bottom:4px}
.muted{color:#616161}.bad{color:#c62828}.ok{color:#2e7d32}
table{border-collapse:collapse;margin:8px 0;background:#fff}
th,td{border:1px solid #e0e0e0;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f5f5f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13.5px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:10px 16px;min-width:150px}
.card b{display:block;font-size:22px}.card span{color:#616161;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:10px}
img{max-width:100%;background:#fff;border:1px solid #e0e0e0}
.note{background:#fff8e1;border-left:4px solid #ffb300;padding:6px 12px;margin:8px 0}
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """An HTML table (no header row when ``header`` is empty); cells are already escaped HTML."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    head = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _seconds(value: float) -> str:
    return "at stop" if not np.isfinite(value) else f"{value:.1f} s"


def _app_version() -> str:
    try:
        return version("bci-app")
    except PackageNotFoundError:
        return "unknown"


def _header(record: SessionRecord) -> str:
    rows = [
        ["Session", _esc(record.origin)],
        ["Started", _esc(record.started or "unknown")],
        ["Task", _esc(record.task)],
        ["Decoder bundle", _esc(record.bundle or "unknown (not in the recording)")],
        ["onnxruntime provider", _esc(record.provider or "unknown (not in the recording)")],
        ["Data stream", _esc(record.stream)],
        ["Duration", f"{record.duration_s:.1f} s"],
    ]
    when = datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        f"<h1>bci-app session report</h1><p class='muted'>Written {_esc(when)} by bci-app "
        f"{_esc(_app_version())}.</p>" + _table([], rows)
    )


def _cards(record: SessionRecord) -> str:
    cards = []
    if record.task == "typing":
        mean = record.mean_cer
        cards.append(("—" if mean is None else f"{mean:.3f}", "mean CER"))
        cards.append((str(len(record.scored_sentences)), "sentences scored"))
    else:
        k = max((w.k for w in record.words), default=10)
        for name, acc in (("top-1", record.top_k_accuracy(1)), (f"top-{k}", _topk(record))):
            cards.append(("—" if acc is None else f"{acc:.0%}", f"{name} accuracy"))
        cards.append((str(len(record.words)), "word windows scored"))
    total = record.latencies_ms.get(TOTAL_STAGE)
    if total is not None and total.size:
        p50, p99 = np.percentile(total, [50, 99])
        cards.append((f"{p50:.0f} / {p99:.0f} ms", "sample → emitted p50 / p99"))
    for key in ("gaps", "dropped samples"):
        if key in record.totals:
            cards.append((str(record.totals[key]), key))
    body = "".join(
        f"<div class='card'><b>{_esc(v)}</b><span>{_esc(k)}</span></div>" for v, k in cards
    )
    return f"<div class='cards'>{body}</div>"


def _topk(record: SessionRecord) -> float | None:
    k = max((w.k for w in record.words), default=10)
    return record.top_k_accuracy(k)


def _typing_sections(record: SessionRecord) -> str:
    if not record.sentences:
        table = "<p class='note'>No sentence was committed in this session.</p>"
    else:
        rows = []
        for i, s in enumerate(record.sentences, 1):
            score = s.cer
            if s.cut_short:
                cer_cell = "<span class='muted'>cut short</span>"
            elif score is None:
                cer_cell = "<span class='muted'>no target</span>"
            else:
                cer_cell = f"{score:.3f}"
            rows.append(
                [
                    str(i),
                    _seconds(s.time_s),
                    f"<span class='text'>{_esc(s.target or '—')}</span>",
                    f"<span class='text'>{_esc(s.decoded) or '<i>(nothing)</i>'}</span>",
                    cer_cell,
                ]
            )
        table = _table(["#", "committed", "target", "decoded", "CER"], rows, numeric={0, 1, 4})
    out = "<h2 id='text'>Decoded text vs target</h2>" + table
    out += "<h2 id='cer'>CER over the session</h2>"
    scored = record.scored_sentences
    if not scored:
        return out + "<p class='note'>No sentence with a target ended before the stop: no CER.</p>"
    n_cut = sum(s.cut_short for s in record.sentences)
    cut = f"; {n_cut} cut short by the stop and left out" if n_cut else ""
    out += (
        f"<p>Mean CER <b>{record.mean_cer:.3f}</b> over <b>{len(scored)}</b> sentence(s) of this "
        f"session{cut}. CER = Levenshtein(decoded, target) / len(target), after normalising both "
        "to the decoder's alphabet; the decoded text is the committed text of the sentence (spaces "
        "at its ends trimmed).</p>"
    )
    return out + _img(figures.cer_figure(list(record.sentences)), "CER per sentence")


def _listening_sections(record: SessionRecord) -> str:
    out = "<h2 id='text'>Heard word vs decoded word</h2>"
    if not record.words:
        return out + (
            "<p class='note'>No word-locked window: the stream carried no <code>word:</code> "
            "markers, so no window can be scored against a heard word.</p>"
        )
    k = max(w.k for w in record.words)
    chance = ""
    if record.n_candidates:
        n = record.n_candidates
        chance = f" Chance: top-1 {1 / n:.1%}, top-{k} {min(1.0, k / n):.1%} ({n} candidates)."
    out += (
        f"<p>Top-1 accuracy <b>{record.top_k_accuracy(1):.0%}</b>, top-{k} "
        f"<b>{_topk(record):.0%}</b> over <b>{len(record.words)}</b> word window(s).{chance}</p>"
    )
    out += _img(figures.words_figure(list(record.words), record.n_candidates), "ranks")
    rows = [
        [
            str(i),
            _seconds(w.time_s),
            f"<span class='text'>{_esc(w.heard)}</span>",
            f"<span class='text'>{_esc(w.decoded)}</span>",
            str(w.rank) if w.rank else f">{w.k}",
            "<span class='ok'>yes</span>" if w.rank == 1 else "no",
            "<span class='ok'>yes</span>" if w.rank else "<span class='bad'>no</span>",
        ]
        for i, w in enumerate(record.words, 1)
    ]
    header = ["#", "onset", "heard", "decoded (top-1)", "rank", "top-1", f"top-{k}"]
    return out + _table(header, rows, numeric={0, 1, 4})


def _latency_section(record: SessionRecord) -> str:
    out = "<h2 id='latency'>Latency per stage</h2>"
    stages = {k: v for k, v in record.latencies_ms.items() if v.size}
    if not stages:
        return out + "<p class='note'>No text event carried stage stamps.</p>"
    rows = []
    for label, values in stages.items():
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        cells = [f"{v:.2f}" for v in (p50, p95, p99, float(values.max()))]
        rows.append([_esc(label), str(values.size), *cells])
    out += (
        "<p>From the stage stamps of each text event (LSL clock): <i>sample</i> is the newest "
        "sample the event was decoded from, so <i>sample → pulled</i> includes the wait for the "
        "samples the resampler's filter needs after it. Milliseconds; in the histograms the "
        "solid, dashed and dotted lines are the p50, p95 and p99.</p>"
    )
    out += _table(["stage", "n", "p50", "p95", "p99", "max"], rows, numeric={1, 2, 3, 4, 5})
    images = "".join(
        _img(figures.latency_histogram(label, values), f"latency {label}")
        for label, values in stages.items()
    )
    return out + f"<div class='grid'>{images}</div>"


def _health_section(record: SessionRecord) -> str:
    health = record.health
    origin = (
        "the stream source's health, polled every second while the session ran (rate: samples "
        "received per second)"
        if health.origin == "live"
        else "the recorded samples (rate: samples per second of stream time; gaps; NaN/Inf samples)"
    )
    out = "<h2 id='health'>Stream health</h2>"
    if health.t_s.size:
        out += f"<p>From {origin}.</p>" + _img(
            figures.health_figure(health), "stream health timeline"
        )
    else:
        out += "<p class='note'>The stream's health was not measured (no stream source).</p>"
    totals = dict(record.totals)
    if health.reconnections is None and "reconnections" not in totals:
        totals["reconnections"] = "not in the recording"
    rows = [[_esc(k), _esc(v)] for k, v in totals.items()]
    out += _table(["count", "session"], rows, numeric={1})
    if health.gaps:
        gap_rows = [[f"{s:.2f} s", f"{d * 1e3:.0f} ms"] for s, d in health.gaps[:50]]
        out += "<p>Gaps:</p>" + _table(["start", "missing"], gap_rows, numeric={0, 1})
    return out


def render_html(record: SessionRecord) -> str:
    """The report of ``record`` as one HTML document (figures embedded)."""
    body = _header(record) + _cards(record)
    body += _typing_sections(record) if record.task == "typing" else _listening_sections(record)
    body += _latency_section(record) + _health_section(record)
    if record.notes:
        body += "<h2>Notes</h2>" + "".join(f"<p class='note'>{_esc(n)}</p>" for n in record.notes)
    title = f"bci-app session report — {record.origin}"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def check_report_path(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path, or raise ReportError when a report cannot be written there."""
    path = Path(path)
    if path.is_dir():
        raise ReportError(
            f"Cannot write the report to '{path}': it is a folder. Give a file name, e.g. "
            f"'{path / 'session.html'}'."
        )
    if not path.parent.is_dir():
        raise ReportError(
            f"Cannot write the report to '{path}': the folder '{path.parent}' does not exist. "
            "Create it or choose another path."
        )
    return path


def write_report(record: SessionRecord, path: str | os.PathLike) -> Path:
    """Write the report of ``record`` to ``path`` (replacing it); return the path."""
    path = check_report_path(path)
    document = render_html(record)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(document)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is read by the lab
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
