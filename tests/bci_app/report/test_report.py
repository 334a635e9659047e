"""Session reports: gathered from a decoding session fed chunk by chunk, from text events.

From files that are not a session's recording; written as one self-contained HTML file.
"""

from __future__ import annotations

import json
import math
import signal
import time

import numpy as np
import pytest
from helpers import report as html_report
from helpers.live import feed

from acquisition.io import write_recording
from acquisition.markers import MarkerSource
from acquisition.recorder import Recorder
from acquisition.simulator import Simulator
from acquisition.stream import StreamSource
from bci_app.decoders.events import TextEvent
from bci_app.decoders.shipped import TYPING_BUNDLE
from bci_app.live.keystroke import KeystrokeStrategy
from bci_app.live.session import DecodingSession
from bci_app.report import (
    EventDigest,
    ReportError,
    SessionCollector,
    read_session_xdf,
    write_report,
)
from bci_app.typing.alphabet import cer

SECTIONS = ("text", "cer", "latency", "health")


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """A simulated MEG typing session decoded chunk by chunk with the shipped bundle, reported."""
    if not TYPING_BUNDLE.is_dir():
        pytest.skip("default bundle missing")
    recording = Simulator("meg", "typing", snr=2.0, seed=4242, subject=0).generate(24.0)
    strategy = KeystrokeStrategy(TYPING_BUNDLE, provider="cpu")
    session = DecodingSession(
        strategy, channels=recording.channels, sfreq=recording.sfreq, text_outlet=False
    )
    collector = SessionCollector(session).start()  # no stream source: nothing to poll
    events, summary = feed(session, recording, 0.1)
    collector.stop()
    record = collector.record()
    path = write_report(record, tmp_path_factory.mktemp("report") / "session.html")
    return strategy, events, summary, record, path.read_text(encoding="utf-8")


def test_the_report_of_a_decoded_session_shows_its_sentences_with_their_cer(decoded):
    strategy, _events, summary, record, document = decoded
    for anchor in SECTIONS:
        assert f"<h2 id='{anchor}'>" in document
    assert "typing-meg-small" in document and summary["provider"] in document
    # the text as committed (and recorded): spaces at its ends trimmed
    committed = [(s.text.strip(), s.target) for s in strategy.sentences]
    assert len(committed) >= 2 and [(s.decoded, s.target) for s in record.sentences] == committed
    rows = html_report.rows(html_report.section(document, "text"))
    assert len(rows) == len(committed)
    for row, (text, target), shown in zip(rows, committed, record.sentences):
        assert row[2] == target and row[3] == (text or "(nothing)")
        if shown.cut_short:  # the stop ended it: shown, not scored
            assert row[4] == "cut short" and row[1] == "at stop"
        else:
            assert row[4] == f"{cer(text, target):.3f}"
    scored = [
        cer(t, target) for (t, target), r in zip(committed, record.sentences) if not r.cut_short
    ]
    assert scored and record.mean_cer == pytest.approx(np.mean(scored))
    assert f"Mean CER <b>{np.mean(scored):.3f}</b> over <b>{len(scored)}</b>" in document


def test_latency_histograms_per_stage_are_pngs_from_the_event_stamps(decoded):
    _strategy, events, _summary, record, document = decoded
    keystrokes = [e for e in events if e.kind == "keystroke"]
    # fed by hand, the samples' times are the recording's: no latency from them
    expected = ["pulled → preprocessed", "preprocessed → windowed", "windowed → inferred"]
    assert list(record.latencies_ms) == [*expected, "inferred → decoded", "decoded → emitted"]
    inference = [(e.stages["inferred"] - e.stages["windowed"]) * 1e3 for e in keystrokes]
    np.testing.assert_allclose(record.latencies_ms["windowed → inferred"], inference)
    figures = html_report.images(document)
    assert {f"latency {label}" for label in record.latencies_ms} <= set(figures)
    assert "CER per sentence" in figures
    assert all(image.width > 300 and image.height > 200 for image in figures.values())
    assert "health was not measured (no stream source)" in document  # fed by hand


def _event(kind, committed="", target=None, timestamp=1.0, stages=None, candidates=()):
    """TEST INPUT standing in for a decoder's output."""
    stages = stages or {}
    return TextEvent(
        kind, committed, target=target, timestamp=timestamp, stages=stages, candidates=candidates
    )


def test_the_digest_takes_sentences_words_and_stage_latencies_from_the_events():
    stages = {"sample": 10.0, "pulled": 10.1, "preprocessed": 10.102, "emitted": 10.2}
    events = [
        _event("keystroke", stages=stages),
        _event("sentence_end", "the cat", "The cat.", 12.0),
        _event("gap", "the cat", timestamp=13.0),
        _event("sentence_end", "the cat a dog", "A dog!", 15.0),
        _event("sentence_end", "the cat a dog", "Unfinished", math.nan),  # committed at stop
        _event("candidates", target="boat", candidates=(("coat", 0.5), ("boat", 0.3))),
        _event("candidates", target="sea", candidates=(("coat", 0.5), ("boat", 0.3))),
    ]
    digest = EventDigest()
    for event in events:
        digest.add_event(event)
    from_json = EventDigest()
    for event in events:
        from_json.add_json(json.loads(event.to_json()))  # as a recording or a log holds them
    for d in (digest, from_json):
        sentences = d.sentences(t0=10.0)
        assert [(s.decoded, s.target, s.cut_short) for s in sentences] == [
            ("the cat", "The cat.", False),
            ("a dog", "A dog!", False),
            ("", "Unfinished", True),
        ]
        assert sentences[0].time_s == 2.0 and sentences[1].cer == cer("a dog", "A dog!")
        assert sentences[2].cer is None
        assert [(w.heard, w.decoded, w.rank, w.k) for w in d.words(10.0)] == [
            ("boat", "coat", 2, 2),
            ("sea", "coat", 0, 2),
        ]
        latencies = d.latencies_ms()
        assert list(latencies) == [
            "sample → pulled",
            "pulled → preprocessed",
            "preprocessed → emitted",
            "sample → emitted",
        ]
        np.testing.assert_allclose([v[0] for v in latencies.values()], [100, 2, 98, 200])
        assert d.gaps == [13.0] and d.task == "listening"


@pytest.fixture(scope="module")
def recording_without_text(tmp_path_factory):
    """An XDF of data and markers only: recorded without decoding."""
    path = tmp_path_factory.mktemp("plain") / "plain.xdf"
    write_recording(Simulator("eeg", "typing", seed=2, sfreq=100.0).generate(3.0), path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, plain: d / "missing.xdf", r"missing\.xdf': the file does not exist"),
        (lambda d, plain: d, r"it is a folder"),
        (lambda d, plain: _write(d / "notes.txt", "hello"), r"notes\.txt': it is not an XDF"),
        (
            lambda d, plain: _write(d / "fake.xdf", "hello"),
            r"fake\.xdf': not an XDF file .*Pass an \.xdf file",
        ),
        (lambda d, plain: plain, r"plain\.xdf': it holds no 'bci-app-text' stream .*Decode it"),
    ],
)
def test_files_that_are_not_a_session_recording_are_refused_by_name(
    tmp_path, recording_without_text, make, message
):
    with pytest.raises(ReportError, match=message):
        read_session_xdf(make(tmp_path, recording_without_text))


def _write(path, text):
    path.write_text(text)
    return path


def test_a_report_is_written_whole_or_not_at_all(decoded, tmp_path):
    record = decoded[3]
    with pytest.raises(ReportError, match=r"the folder '.*nowhere' does not exist"):
        write_report(record, tmp_path / "nowhere" / "r.html")
    with pytest.raises(ReportError, match="it is a folder"):
        write_report(record, tmp_path)
    assert list(tmp_path.iterdir()) == []
    path = write_report(record, tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == [path] and path.read_text().endswith("</html>\n")


def _wait(until, timeout=40.0):
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_stream_drop_shows_in_the_health_timeline_live_and_from_the_recording(
    source_id, spawn_python, tmp_path
):
    """The simulator's outlet process is killed and restarted with the same id while recorded."""
    if not TYPING_BUNDLE.is_dir():
        pytest.skip("default bundle missing")
    code = f"""
        import time
        from acquisition.simulator import Simulator, SimulatorStream
        sim = Simulator("meg", "typing", snr=2.0, seed={{seed}}, subject=0)
        with SimulatorStream(sim, source_id="{source_id}"):
            time.sleep(60)
    """
    first = spawn_python(code.format(seed=77))
    path = tmp_path / "drop.xdf"
    with (
        StreamSource(source_id=source_id, resolve_timeout=30) as source,
        MarkerSource(source_id=f"{source_id}-markers", resolve_timeout=30) as markers,
    ):
        session = DecodingSession(KeystrokeStrategy(TYPING_BUNDLE, provider="cpu"), source, markers)
        collector = SessionCollector(session)
        ids = [source_id, f"{source_id}-markers", session.text_outlet_info.source_id()]
        with Recorder(path, ids), collector, session:
            _wait(lambda: session.pipeline.n_windows >= 5)
            first.send_signal(signal.SIGKILL)
            _wait(lambda: source.health().state == "lost", timeout=10)
            spawn_python(code.format(seed=78))
            _wait(lambda: source.health().reconnections >= 1)
            n_before = session.pipeline.n_windows
            _wait(lambda: session.pipeline.n_windows >= n_before + 5)
        live = collector.record()
    assert live.totals["reconnections"] >= 1 and live.totals["gaps"] >= 1
    assert live.health.reconnections and any(s == "lost" for *_, s in live.health.outages)
    start, end, _state = live.health.outages[0]
    lost = (live.health.t_s > start + 1.0) & (live.health.t_s < end)
    assert (live.health.rate_hz[lost] == 0).all()  # nothing arrived while it was lost
    from_file = read_session_xdf(path)
    assert from_file.totals["gaps"] >= 1 and from_file.totals["reconnections"] >= 1
    # the same outage, seen by two inlets (the last chunks of the killed outlet may reach one)
    dropped = live.totals["dropped samples"], from_file.totals["dropped samples"]
    assert min(dropped) > 1000 and abs(dropped[0] - dropped[1]) < 0.05 * dropped[0]
    for record in (live, from_file):
        document = write_report(record, tmp_path / f"{record.health.origin}.html").read_text()
        assert "stream health timeline" in html_report.images(document)
        gaps = html_report.rows(html_report.section(document, "health"))
        assert ["reconnections", str(record.totals["reconnections"])] in gaps
