"""RingBuffer: exact contents across wrap-around, readers that fall behind, concurrent use."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from acquisition.ringbuffer import NewSamples, RingBuffer


def _ramp(start: int, n: int, n_channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose channel k holds (index * (k + 1)); timestamps index / 100."""
    idx = np.arange(start, start + n, dtype=np.float64)
    data = idx[:, None] * np.arange(1, n_channels + 1)[None, :]
    return data.astype(np.float32), idx / 100.0


def test_write_read_since_wraps_exactly():
    buf = RingBuffer(3, 10)
    counter, seen = 0, []
    for start, n in [(0, 4), (4, 5), (9, 7), (16, 1), (17, 10)]:  # 10 fills the buffer exactly
        buf.write(*_ramp(start, n))
        new = buf.read_since(counter)
        assert new.n_lost == 0
        np.testing.assert_array_equal(new.data, _ramp(start, n)[0])
        np.testing.assert_array_equal(new.timestamps, _ramp(start, n)[1])
        assert new.valid.all() and new.valid.shape == (n,)
        seen.append(new.data[:, 0])
        counter = new.next_counter
    assert counter == buf.n_written == 27
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(27))
    assert buf.read_since(counter).data.shape == (0, 3)


def test_read_latest_and_fewer_than_requested():
    buf = RingBuffer(3, 8)
    data, ts, valid = buf.read_latest(5)
    assert data.shape == (0, 3) and ts.shape == (0,) and valid.shape == (0,)
    buf.write(*_ramp(0, 3))
    np.testing.assert_array_equal(buf.read_latest(5)[0][:, 0], [0, 1, 2])
    buf.write(*_ramp(3, 9))  # wraps: slots now hold 4..11
    data, ts, _ = buf.read_latest(8)
    np.testing.assert_array_equal(data[:, 0], np.arange(4, 12))
    np.testing.assert_array_equal(ts, np.arange(4, 12) / 100.0)
    assert buf.n_available == 8


def test_reader_that_falls_behind_gets_n_lost():
    buf = RingBuffer(3, 10)
    buf.write(*_ramp(0, 6))
    counter = buf.read_since(0).next_counter
    buf.write(*_ramp(6, 25))  # 25 new samples, only the last 10 are kept
    new = buf.read_since(counter)
    assert new.n_lost == 15
    np.testing.assert_array_equal(new.data[:, 0], np.arange(21, 31))
    assert new.next_counter == 31


def test_chunk_longer_than_capacity_keeps_its_tail():
    buf = RingBuffer(3, 4)
    buf.write(*_ramp(0, 11))
    data, _, _ = buf.read_latest(4)
    np.testing.assert_array_equal(data[:, 0], [7, 8, 9, 10])
    assert buf.n_written == 11


def test_valid_flags_default_to_finite_and_can_be_given():
    buf = RingBuffer(2, 6)
    data = np.array([[1, 2], [np.nan, 0], [3, np.inf], [4, 5]], dtype=np.float32)
    buf.write(data, np.arange(4.0))
    got, _, valid = buf.read_latest(4)
    np.testing.assert_array_equal(valid, [True, False, False, True])
    assert np.isnan(got[1, 0]) and np.isinf(got[2, 1])  # raw values are kept
    buf.write(np.zeros((2, 2)), np.arange(2.0), valid=np.array([False, True]))
    np.testing.assert_array_equal(buf.read_latest(2)[2], [False, True])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'n_channels'"):
        RingBuffer(0, 10)
    with pytest.raises(ValueError, match="'capacity'"):
        RingBuffer(2, 0)
    buf = RingBuffer(2, 10)
    with pytest.raises(ValueError, match=r"'data'.*\(n_samples, 2\).*\(3, 3\)"):
        buf.write(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"'timestamps'.*\(3,\)"):
        buf.write(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="'valid'"):
        buf.write(np.zeros((3, 2)), np.zeros(3), valid=np.ones(2, bool))
    with pytest.raises(ValueError, match="'counter'.*ahead"):
        buf.read_since(5)
    with pytest.raises(ValueError, match="'n'.*capacity 10"):
        buf.read_latest(11)


def test_concurrent_writer_and_reader_never_see_torn_or_missing_samples():
    """A reader racing a writer gets contiguous samples; whatever it misses is in n_lost."""
    buf = RingBuffer(64, 256)
    total, chunk = 200_000, 37
    done = threading.Event()

    def writer() -> None:
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            idx = np.arange(start, start + n, dtype=np.float32)
            buf.write(np.repeat(idx[:, None], 64, axis=1), idx.astype(np.float64))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    counter, received, lost = 0, 0, 0
    while not (done.is_set() and counter == buf.n_written):
        data, ts, _, new_counter, n_lost = buf.read_since(counter)  # unpacks in field order
        if data.shape[0]:
            # every row is one whole sample (never torn), and rows follow each other from the
            # first sample not lost
            assert (data == data[:, :1]).all()
            np.testing.assert_array_equal(data[:, 0], counter + n_lost + np.arange(len(data)))
            np.testing.assert_array_equal(ts, data[:, 0])
        assert counter + n_lost + data.shape[0] == new_counter
        received += data.shape[0]
        lost += n_lost
        counter = new_counter
    thread.join()
    assert received + lost == total
    assert received > 0


def test_read_since_names_its_fields():
    """The result of read_since says what each part is, and still unpacks in that order."""
    buf = RingBuffer(2, 4)
    buf.write(np.array([[1.0, np.nan], [2.0, 3.0]]), np.array([10.0, 10.5]))
    new = buf.read_since(0)
    assert isinstance(new, NewSamples)
    assert new._fields == ("data", "timestamps", "valid", "next_counter", "n_lost")
    np.testing.assert_array_equal(new.data[:, 0], [1.0, 2.0])
    np.testing.assert_array_equal(new.timestamps, [10.0, 10.5])
    np.testing.assert_array_equal(new.valid, [False, True])
    assert (new.next_counter, new.n_lost) == (2, 0)
    data, timestamps, valid, next_counter, n_lost = new
    assert data is new.data and timestamps is new.timestamps and valid is new.valid
    assert (next_counter, n_lost) == (2, 0)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_a_new_buffer_has_its_memory_mapped_before_any_write():
    # The constructor maps every page (zeros), so no write faults one in on the writer's path.
    # 64 MiB is above malloc's mmap threshold: fresh pages, resident only once touched.
    page = os.sysconf("SC_PAGE_SIZE")

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * page

    n_ch, capacity = 64, 1 << 18
    before = resident()
    buf = RingBuffer(n_ch, capacity)
    assert resident() - before >= 0.95 * n_ch * capacity * 4
    assert buf.n_available == 0
    buf.write(np.ones((3, n_ch), np.float32), np.arange(3.0))
    np.testing.assert_array_equal(buf.read_latest(3)[0], 1.0)


def test_a_reader_waiting_for_new_samples_wakes_on_the_write():
    buf = RingBuffer(2, 16)
    assert not buf.wait_for_new(0, timeout=0.01)  # nothing written: the wait times out
    writer = threading.Timer(0.05, buf.write, (np.ones((3, 2)), np.arange(3.0)))
    writer.start()
    assert buf.wait_for_new(0, timeout=30)  # returns once the write is in
    writer.join()
    assert buf.n_written == 3
    assert buf.wait_for_new(2, timeout=0)  # samples past counter 2 are there already
    assert not buf.wait_for_new(3, timeout=0.01)
