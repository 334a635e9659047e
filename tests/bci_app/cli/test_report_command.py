"""``bci-app run`` writes a session report; ``bci-app report`` rebuilds it from the recording."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import report as html_report

from acquisition.io import write_recording
from acquisition.simulator import Simulator
from bci_app.decoders.shipped import TYPING_BUNDLE
from bci_app.typing.alphabet import cer


def bci(*args: str, cwd=None, timeout: float = 150.0) -> subprocess.CompletedProcess:
    """Run ``bci-app ARGS`` in a subprocess and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "bci_app.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A 30 s built-in typing session decoded and recorded by ``bci-app run --record``.

    The built-in stream types held-out test sentences; its first one ends near 21.6 s.
    """
    if not TYPING_BUNDLE.is_dir():
        pytest.skip("default bundle missing")
    folder = tmp_path_factory.mktemp("run")
    proc = bci("run", "--duration", "30", "--record", str(folder / "session.xdf"))
    assert proc.returncode == 0, proc.stderr
    return folder, proc.stdout


@pytest.mark.slow
def test_run_writes_the_report_beside_the_recording(recorded):
    folder, stdout = recorded
    report = folder / "session.html"
    assert f"Wrote the session report to {report}" in stdout
    document = report.read_text(encoding="utf-8")
    for anchor in ("text", "cer", "latency", "health"):
        assert f"<h2 id='{anchor}'>" in document
    assert "typing-meg-small" in document and "CPUExecutionProvider" in document
    rows = html_report.rows(html_report.section(document, "text"))
    scored = [row for row in rows if row[4] not in ("cut short", "no target")]
    assert scored, "no sentence ended within the session"
    for row in scored:  # number, committed at, target, decoded, CER
        decoded = "" if row[3] == "(nothing)" else row[3]
        assert row[4] == f"{cer(decoded, row[2]):.3f}"
    figures = html_report.images(document)
    assert {"latency sample → emitted", "latency windowed → inferred"} <= set(figures)
    assert {"CER per sentence", "stream health timeline"} <= set(figures)


@pytest.mark.slow
def test_report_rebuilds_it_from_the_recording(recorded):
    folder, _stdout = recorded
    out = folder / "rebuilt.html"
    proc = bci("report", str(folder / "session.xdf"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"Wrote the session report to {out}"
    live = (folder / "session.html").read_text(encoding="utf-8")
    rebuilt = out.read_text(encoding="utf-8")
    # the same sentences, decoded text and CER (times count from the session's and the file's
    # first sample: the recorder connects after the decoder)
    sentences = [html_report.rows(html_report.section(doc, "text")) for doc in (live, rebuilt)]
    assert [[r[0], *r[2:]] for r in sentences[0]] == [[r[0], *r[2:]] for r in sentences[1]]
    means = [html_report.section(doc, "cer").split("</p>")[0] for doc in (live, rebuilt)]
    assert means[0] == means[1] and "Mean CER" in means[0]
    assert "typing-meg-small" in rebuilt and "CPUExecutionProvider" in rebuilt
    live_stages = html_report.rows(html_report.section(live, "latency"))
    rebuilt_stages = html_report.rows(html_report.section(rebuilt, "latency"))
    assert [row[0] for row in rebuilt_stages] == [row[0] for row in live_stages]
    assert "latency sample → emitted" in html_report.images(rebuilt)


@pytest.fixture(scope="module")
def plain_xdf(tmp_path_factory):
    """An XDF recorded without decoding: data and markers, no text stream."""
    path = tmp_path_factory.mktemp("plain") / "plain.xdf"
    write_recording(Simulator("eeg", "typing", seed=2, sfreq=100.0).generate(3.0), path)
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.xdf", None, "the file does not exist"),
        ("notes.txt", "hello", "it is not an XDF recording"),
        ("plain.xdf", "plain", "holds no 'bci-app-text' stream"),
    ],
)
def test_a_file_a_report_cannot_come_from_is_one_line_and_exit_2(
    tmp_path, plain_xdf, name, content, message
):
    path = tmp_path / name
    if content == "plain":
        path.write_bytes(plain_xdf.read_bytes())
    elif content is not None:
        path.write_text(content)
    before = set(tmp_path.iterdir())
    proc = bci("report", name, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"bci-app report: error: Cannot report on '{name}'")
    assert message in lines[0] and "bci-app run" in lines[0]  # the fix
    assert set(tmp_path.iterdir()) == before  # nothing written


def test_run_refuses_a_report_path_it_cannot_write_before_it_starts(tmp_path):
    where = tmp_path / "no-such-folder" / "r.html"
    proc = bci("run", "--report", str(where), "--duration", "1", timeout=60)
    assert proc.returncode == 2
    assert f"Cannot write the report to '{where}': the folder" in proc.stderr
    assert "Started the built-in" not in proc.stdout


def test_report_has_help():
    proc = bci("report", "--help", timeout=60)
    assert proc.returncode == 0 and "usage: bci-app report" in proc.stdout
    assert "SESSION.xdf" in proc.stdout and "--out REPORT.html" in proc.stdout
