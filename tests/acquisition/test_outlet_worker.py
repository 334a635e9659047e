"""The outlet-worker lifecycle shared by Player and SimulatorStream, over real loopback LSL.

Start, stop (twice, before start), join, the context manager, the one state property, and the one
error rule: a failing worker logs its traceback, ends ``"failed"``, keeps the error, and re-raises
it once from join()/stop() when BCI_APP_RAISE_STREAM_ERRORS says so.
"""

from __future__ import annotations

import logging

import numpy as np
import pylsl
import pytest

from acquisition._env import raise_stream_errors
from acquisition._outlet_worker import OutletWorker
from acquisition.channels import ChannelSpec
from acquisition.player import Player
from acquisition.recording import Recording
from acquisition.simulator import Simulator, SimulatorStream

SFREQ = 100.0


class _Ramp(OutletWorker):
    """Pushes ``n_chunks`` chunks whose channel 0 is the sample index.

    A marker on sample 0 of each; raises after ``fail_after`` chunks (fault injection).
    """

    _what = "Ramp"

    def __init__(self, source_id: str, n_chunks: int, fail_after: int | None = None) -> None:
        super().__init__(
            name="ramp",
            stype="EEG",
            channels=ChannelSpec(("index", "Cz"), ("misc", "eeg"), ("n/a", "V")),
            sfreq=SFREQ,
            source_id=source_id,
            chunk_size=10,
            max_buffered=60,
        )
        self.n_chunks, self.fail_after = n_chunks, fail_after

    def _work(self) -> None:
        while not self._outlet.wait_for_consumers(0.1):
            if self._stop_requested.is_set():
                return
        self._start_timestamp = pylsl.local_clock()
        for k in range(self.n_chunks):
            if k == self.fail_after:
                raise OSError("injected failure")
            index = np.arange(10 * k, 10 * k + 10)
            data = np.column_stack([index, np.zeros(10)])
            stamps = self._start_timestamp + index / SFREQ
            self._push(data, stamps, [(0, f"chunk:{k}")])
            if not self._sleep(0.01):
                return


def _inlet(source_id: str) -> pylsl.StreamInlet:
    (info,) = pylsl.resolve_byprop("source_id", source_id, 1, 10.0)
    inlet = pylsl.StreamInlet(info, max_buflen=60, recover=False)
    inlet.open_stream(10.0)
    return inlet


@pytest.mark.parametrize("value", ["", "0", "1", "yes", "true"])
def test_raise_stream_errors_is_true_for_any_value_but_empty_or_zero(monkeypatch, value):
    monkeypatch.setenv("BCI_APP_RAISE_STREAM_ERRORS", value)
    assert raise_stream_errors() is (value not in ("", "0"))
    monkeypatch.delenv("BCI_APP_RAISE_STREAM_ERRORS")
    assert raise_stream_errors() is False


def test_lifecycle_start_finish_join_and_markers_on_their_samples(source_id):
    worker = _Ramp(source_id, n_chunks=5)
    assert worker.state == "new" and not worker.running and not worker.done.is_set()
    with worker:
        assert worker.state == "running"
        with pytest.warns(RuntimeWarning, match="Ramp .* is already running; start\\(\\) did"):
            worker.start()
        marker_inlet, inlet = _inlet(f"{source_id}-markers"), _inlet(source_id)
        assert worker.join(20.0)
        assert worker.state == "finished" and worker.error is None
        data, stamps = inlet.pull_chunk(timeout=2.0, max_samples=100)
        markers, marker_stamps = marker_inlet.pull_chunk(timeout=2.0, max_samples=10)
        inlet.close_stream()
        marker_inlet.close_stream()
    assert worker.state == "finished" and worker.n_samples_sent == 50
    np.testing.assert_array_equal(np.array(data)[:, 0], np.arange(50))
    assert [m[0] for m in markers] == [f"chunk:{k}" for k in range(5)]
    np.testing.assert_array_equal(marker_stamps, np.array(stamps)[::10])
    worker.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError, match="Ramp has finished; a Ramp runs once. Create a new"):
        worker.start()


def test_stop_before_start_ends_the_worker(source_id):
    worker = _Ramp(source_id, n_chunks=5)
    worker.stop()
    assert worker.state == "stopped" and worker.done.is_set() and worker.join(0.0)
    with pytest.raises(RuntimeError, match="Ramp has stopped.*Create a new Ramp"):
        worker.start()


@pytest.mark.parametrize("raise_errors", ["1", "0"])
def test_failing_worker_logs_ends_failed_and_reraises_once_when_asked(
    source_id, monkeypatch, caplog, raise_errors
):
    monkeypatch.setenv("BCI_APP_RAISE_STREAM_ERRORS", raise_errors)
    worker = _Ramp(source_id, n_chunks=5, fail_after=2)
    with caplog.at_level(logging.ERROR, logger="acquisition._outlet_worker"):
        worker.start()
        inlet = _inlet(source_id)
        if raise_errors == "1":
            with pytest.raises(OSError, match="injected failure"):
                worker.join(20.0)
        else:
            assert worker.join(20.0)
        worker.stop()  # re-raises nothing: the error was raised once already, or not asked for
        inlet.close_stream()
    assert worker.state == "failed" and worker.done.is_set()
    assert isinstance(worker.error, OSError) and worker.n_samples_sent == 20
    assert any(r.exc_info and "injected failure" in str(r.exc_info[1]) for r in caplog.records)


def test_player_and_simulator_stream_share_the_lifecycle(source_id):
    """Both producers go through the same states and name themselves in the same messages."""
    recording = Recording(
        np.zeros((50, 1)), np.arange(50) / SFREQ, SFREQ, ChannelSpec.generic(1, "eeg", "V")
    )
    producers = [
        Player(recording, speed="max", source_id=f"{source_id}-player"),
        SimulatorStream(Simulator("eeg", sentences=["hi"], seed=1), source_id=f"{source_id}-sim"),
    ]
    for producer in producers:
        what = type(producer).__name__
        assert producer.state == "new"
        with producer:
            assert producer.state == "running" and producer.running
            with pytest.warns(RuntimeWarning, match=f"The {what} .* is already running"):
                producer.start()
        assert producer.state == "stopped" and producer.done.is_set() and producer.error is None
        producer.stop()
        with pytest.raises(RuntimeError, match=f"{what} has stopped; a {what} runs once"):
            producer.start()
