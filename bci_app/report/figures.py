"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas (no window, no pyplot).

matplotlib is imported inside the functions, so importing this module costs nothing; figures are
:class:`matplotlib.figure.Figure` objects on their own canvas, safe off the main thread (the
window writes its report from a worker thread).
"""

from __future__ import annotations

import io

import numpy as np

from bci_app.report.data import HealthTimeline, SentenceRow, WordRow

_BLUE, _GREY, _RED, _ORANGE, _GREEN = "#1565c0", "#9e9e9e", "#c62828", "#ef6c00", "#2e7d32"


def _figure(width: float, height: float, rows: int = 1, sharex: bool = False):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(True, color="#e0e0e0", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = io.BytesIO()
    FigureCanvasAgg(fig).print_png(out)
    return out.getvalue()


def latency_histogram(label: str, values_ms: np.ndarray) -> bytes:
    """Histogram of one stage's latencies (ms) with its p50, p95 and p99 marked."""
    fig, (ax,) = _figure(4.4, 2.7)
    values = np.asarray(values_ms, dtype=float)
    values = values[np.isfinite(values)]
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    low, high = float(values.min()), float(np.percentile(values, 99.5))
    if high - low < 1e-3:
        low, high = low - 0.5, high + 0.5
    ax.hist(np.clip(values, low, high), bins=30, range=(low, high), color=_BLUE, alpha=0.75)
    for value, style in ((p50, "-"), (p95, "--"), (p99, ":")):
        ax.axvline(value, color=_RED, linestyle=style, linewidth=1.2)
    ax.set_title(
        f"{label}  (n={values.size})\np50 {_ms(p50)}  ·  p95 {_ms(p95)}  ·  p99 {_ms(p99)} ms",
        fontsize=9.5,
    )
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("events")
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    return _png(fig)


def _ms(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.2f}"


def cer_figure(sentences: list[SentenceRow]) -> bytes:
    """CER of each scored sentence in session order, with the mean."""
    fig, (ax,) = _figure(7.5, 2.9)
    scored = [(i + 1, s.cer) for i, s in enumerate(sentences) if s.cer is not None]
    numbers = [n for n, _ in scored]
    values = np.array([v for _, v in scored])
    bars = ax.bar(numbers, values, color=_BLUE, width=0.7, label="CER of the sentence")
    if len(numbers) <= 30:
        labels = ax.bar_label(bars, [f"{v:.2f}" for v in values], fontsize=8, padding=2)
        for label in labels:  # readable where the mean line crosses it
            label.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.6})
    mean = float(values.mean())
    ax.axhline(mean, color=_RED, linestyle="--", linewidth=1.2, label=f"mean {mean:.3f}")
    ax.set_xlabel("sentence (session order)")
    ax.set_ylabel("CER")
    ax.set_ylim(0, max(1.0, float(values.max()) * 1.1))
    ax.set_xticks(numbers if len(numbers) <= 30 else numbers[:: max(1, len(numbers) // 15)])
    ax.set_xlim(0.3, max(numbers) + 0.7)
    ax.legend(fontsize=8, frameon=False, loc="upper right")
    return _png(fig)


def words_figure(words: list[WordRow], n_candidates: int | None) -> bytes:
    """Where the heard word ranked among the candidates (1..k, or not among them)."""
    fig, (ax,) = _figure(7.5, 2.9)
    k = max(w.k for w in words)
    ranks = np.array([w.rank for w in words])
    counts = [int((ranks == r).sum()) for r in range(1, k + 1)] + [int((ranks == 0).sum())]
    labels = [str(r) for r in range(1, k + 1)] + [f">{k}"]
    colors = [_GREEN] + [_BLUE] * (k - 1) + [_GREY]
    ax.bar(range(len(counts)), counts, color=colors, width=0.7)
    ax.set_xticks(range(len(counts)), labels)
    ax.set_xlabel("rank of the heard word among the candidates")
    ax.set_ylabel("word windows")
    title = f"top-1 {np.mean(ranks == 1):.0%}, top-{k} {np.mean(ranks > 0):.0%}"
    if n_candidates:
        title += f" (chance {1 / n_candidates:.1%} / {min(1.0, k / n_candidates):.1%})"
    ax.set_title(title, fontsize=10)
    return _png(fig)


def health_figure(timeline: HealthTimeline) -> bytes:
    """Rate, lag and cumulative dropped / invalid samples over the session, gaps shaded."""
    fig, (rate_ax, lag_ax, count_ax) = _figure(9.0, 6.2, rows=3, sharex=True)
    t = timeline.t_s
    rate_ax.plot(t, timeline.rate_hz, color=_BLUE, marker=".", markersize=3, linewidth=1)
    if np.isfinite(timeline.nominal_hz):
        rate_ax.axhline(timeline.nominal_hz, color=_GREY, linestyle="--", linewidth=1)
        rate_ax.annotate(
            f"nominal {timeline.nominal_hz:g} Hz",
            (0.01, timeline.nominal_hz),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=8,
            color="#616161",
            va="bottom",
        )
    finite = timeline.rate_hz[np.isfinite(timeline.rate_hz)]
    if finite.size and np.isfinite(timeline.nominal_hz):
        spread = max(float(np.abs(finite - timeline.nominal_hz).max()), 0.02 * timeline.nominal_hz)
        rate_ax.set_ylim(timeline.nominal_hz - 1.3 * spread, timeline.nominal_hz + 1.3 * spread)
    rate_ax.set_ylabel("rate (Hz)")
    # polled lag is a curve; the lag at decoded events is a point per event (none in a pause)
    lag_line = 0.8 if timeline.origin == "live" else 0
    lag_ax.plot(
        timeline.lag_t_s, timeline.lag_ms, color=_BLUE, marker=".", markersize=4, linewidth=lag_line
    )
    lag_ax.set_ylabel("lag (ms)")
    lag_ax.set_title(f"lag: {timeline.lag_label}", fontsize=9, loc="left")
    counted = timeline.count_t_s
    count_ax.step(counted, timeline.dropped, where="post", color=_RED, label="dropped (gaps)")
    count_ax.step(counted, timeline.invalid, where="post", color=_ORANGE, label="invalid (NaN/Inf)")
    count_ax.set_ylabel("samples (cumulative)")
    count_ax.set_xlabel("session time (s)")
    top = max([1.0, *timeline.dropped, *timeline.invalid])
    count_ax.set_ylim(-0.05 * top, top * 1.15)
    if t.size and top == 1.0:
        count_ax.text(
            0.5, 0.5, "no dropped or invalid samples", transform=count_ax.transAxes, ha="center"
        )
    for ax in (rate_ax, lag_ax, count_ax):
        for start, duration in timeline.gaps:
            ax.axvspan(start, start + max(duration, 0.05), color=_RED, alpha=0.2, linewidth=0)
        for start, end, _state in timeline.outages:
            ax.axvspan(start, max(end, start + 0.05), color=_ORANGE, alpha=0.15, linewidth=0)
        for when in timeline.reconnections or ():
            ax.axvline(when, color=_GREEN, linewidth=1.2)
    handles = _legend_extras(timeline)
    count_ax.legend(
        handles=count_ax.get_legend_handles_labels()[0] + handles,
        fontsize=8,
        frameon=False,
        loc="upper left",
        ncol=2,
    )
    if not t.size:
        rate_ax.text(0.5, 0.5, "not measured", transform=rate_ax.transAxes, ha="center")
    return _png(fig)


def _legend_extras(timeline: HealthTimeline) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    extras = []
    if timeline.gaps:
        extras.append(Patch(color=_RED, alpha=0.2, label="gap"))
    if timeline.outages:
        extras.append(Patch(color=_ORANGE, alpha=0.15, label="stalled / lost"))
    if timeline.reconnections:
        extras.append(Line2D([], [], color=_GREEN, label="reconnected"))
    return extras
