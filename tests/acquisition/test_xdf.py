"""XDF writer and reader: exact round trips through pyxdf, bad files, cut files, write errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pylsl
import pytest
import pyxdf

from acquisition.channels import ChannelSpec, make_stream_info
from acquisition.recording import Marker, Recording
from acquisition.xdf import XdfWriter, read_xdf, write_xdf


def _load_raw(path):
    """Read with pyxdf, no clock sync or dejitter, so values and timestamps come back as written."""
    return pyxdf.load_xdf(path, synchronize_clocks=False, dejitter_timestamps=False)[0]


def _index_data(start: int, n: int, n_channels: int = 3) -> np.ndarray:
    data = np.random.default_rng(start).standard_normal((n, n_channels)).astype(np.float32)
    data[:, 0] = np.arange(start, start + n)
    return data


def test_round_trip_numeric_and_string_streams(tmp_path):
    path = tmp_path / "round.xdf"
    strings = [["key:a", ""], ["sentence_start:héllo wörld ✓", "x" * 300], ["key:space", "b"]]
    ints = np.arange(-40, 40, dtype=np.int16).reshape(-1, 2)
    with XdfWriter(path) as writer:
        writer.add_stream(1, make_stream_info("eeg", "EEG", ChannelSpec.generic(3), 100.0, "a"))
        writer.add_stream(2, name="keys", channel_count=2, channel_format="string")
        writer.add_stream(3, name="aux", channel_count=2, nominal_srate=10, channel_format="int16")
        writer.add_stream(
            4, name="dbl", channel_count=1, nominal_srate=5, channel_format="double64"
        )
        for k in range(3):  # several chunks per stream, interleaved
            writer.write_samples(
                1, _index_data(50 * k, 50), 10 + np.arange(50 * k, 50 * k + 50) / 100
            )
            writer.write_samples(2, [strings[k]], [10.5 + k])
            writer.write_clock_offset(1, 10.0 + k, -0.25)
        writer.write_samples(3, ints, 3 + np.arange(40) / 10)
        writer.write_samples(4, np.array([1e-300, -2.5, np.pi]), [1.0, 1.2, 1.4])  # 1-D, 1 ch
        assert writer.write_samples(4, np.empty((0, 1)), []) == 0
        writer.write_boundary()
    streams = {s["info"]["name"][0]: s for s in _load_raw(path)}
    written = np.vstack([_index_data(50 * k, 50) for k in range(3)])
    np.testing.assert_array_equal(streams["eeg"]["time_series"], written)
    np.testing.assert_array_equal(streams["eeg"]["time_stamps"], 10 + np.arange(150) / 100)
    assert streams["keys"]["time_series"] == strings
    np.testing.assert_array_equal(streams["keys"]["time_stamps"], [10.5, 11.5, 12.5])
    assert streams["aux"]["time_series"].dtype == np.int16
    np.testing.assert_array_equal(streams["aux"]["time_series"], ints)
    np.testing.assert_array_equal(streams["dbl"]["time_series"][:, 0], [1e-300, -2.5, np.pi])
    footer = streams["eeg"]["footer"]["info"]
    assert footer["sample_count"] == ["150"] and float(footer["last_timestamp"][0]) == 11.49
    assert streams["eeg"]["clock_times"] == [10.0, 11.0, 12.0]
    assert streams["eeg"]["clock_values"] == [-0.25] * 3
    assert streams["dbl"]["footer"]["info"]["sample_count"] == ["3"]


def _recording(n: int = 500, sfreq: float = 250.0) -> Recording:
    positions = np.array([[np.nan] * 3, [0.01, 0.02, 0.08], [-0.05, 0.0, 0.06]])
    channels = ChannelSpec(
        ["index", "C3", "C4"], ["misc", "eeg", "eeg"], ["n/a", "V", "V"], positions
    )
    markers = [Marker(100.4, "key:a"), Marker(101.0, "sentence_end:a b")]
    return Recording(
        _index_data(0, n),
        100 + np.arange(n) / sfreq,
        sfreq,
        channels,
        markers,
        name="amp",
        source_id="amp-1",
    )


def test_write_xdf_read_xdf_round_trip(tmp_path):
    rec = _recording()
    path = write_xdf(rec, tmp_path / "rec.xdf")
    back = read_xdf(path)
    np.testing.assert_array_equal(back.data, rec.data)
    np.testing.assert_allclose(back.timestamps, rec.timestamps, atol=1e-9)
    assert back.markers == rec.markers
    assert back.channels == rec.channels  # names, types, units
    np.testing.assert_allclose(back.channels.positions, rec.channels.positions, rtol=1e-5)
    assert (back.sfreq, back.name, back.source_id) == (250.0, "amp", "amp-1")
    assert back.meta["xdf_streams"] == ["amp", "amp-markers"] and "truncated" not in back.meta
    gz_path = tmp_path / "rec.xdfz"  # gzip-compressed XDF reads the same
    gz_path.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_xdf(gz_path).data, rec.data)
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        write_xdf(rec, path)
    with pytest.raises(ValueError, match=r"'path'.*rec\.fif' must end in \.xdf.*write_recording"):
        write_xdf(rec, tmp_path / "rec.fif")


def test_read_xdf_scales_units_to_si_and_maps_types(tmp_path):
    info = pylsl.StreamInfo("amp", "EEG", 2, 100.0, pylsl.cf_float32, "amp-2")
    chans = info.desc().append_child("channels")
    for label, ctype, unit in (("Fp1", "EEG", "microvolts"), ("Trig", "TRIGGER", "")):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", ctype)
        ch.append_child_value("unit", unit)
    path = tmp_path / "uv.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(7, info)
        writer.write_samples(7, np.array([[10.0, 1.0], [-20.0, 0.0]]), [1.0, 1.01])
    rec = read_xdf(path)
    assert rec.channels.types == ("eeg", "stim") and rec.channels.units == ("V", "n/a")
    np.testing.assert_allclose(rec.data, [[10e-6, 1.0], [-20e-6, 0.0]])


def test_read_xdf_picks_the_stream(tmp_path):
    path = tmp_path / "two.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, name="small", channel_count=2, nominal_srate=10, source_id="s-1")
        writer.add_stream(2, name="big", channel_count=4, nominal_srate=10, source_id="b-1")
        writer.add_stream(3, name="keys", channel_format="string")
        writer.write_samples(1, np.zeros((20, 2)), np.arange(20) / 10)
        writer.write_samples(2, np.ones((20, 4)), np.arange(20) / 10)
        writer.write_samples(3, [["key:q"]], [0.5])
    assert read_xdf(path).name == "big"
    assert read_xdf(path, stream="s-1").name == "small"  # by source_id
    assert read_xdf(path, "small").markers == [Marker(0.5, "key:q")]
    with pytest.raises(ValueError, match=r"no stream named 'eeg'.*'small' \(float32, 2 ch, 20"):
        read_xdf(path, "eeg")
    with pytest.raises(ValueError, match=r"'keys'.*string \(marker\) stream.*'big'"):
        read_xdf(path, "keys")


def test_read_xdf_without_signal_stream_lists_streams(tmp_path):
    path = tmp_path / "markers_only.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, name="keys", channel_format="string")
        writer.write_samples(1, [["key:a"]], [1.0])
    with pytest.raises(ValueError, match=r"markers_only\.xdf' holds no numeric.*'keys' \(string"):
        read_xdf(path)


def test_bad_files_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.xdf"):
        read_xdf(tmp_path / "missing.xdf")
    not_xdf = tmp_path / "notes.xdf"
    not_xdf.write_bytes(b"hello, this is text")
    with pytest.raises(ValueError, match=r"notes\.xdf': not an XDF file \(it starts with b'hell'"):
        read_xdf(not_xdf)
    empty = tmp_path / "empty.xdf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.xdf': not an XDF file"):
        read_xdf(empty)
    good = write_xdf(_recording(), tmp_path / "good.xdf").read_bytes()
    cut_header = tmp_path / "cut_header.xdf"
    cut_header.write_bytes(good[:60])  # inside the first StreamHeader
    with pytest.raises(ValueError, match=r"cut_header\.xdf': truncated.*before any stream"):
        read_xdf(cut_header)
    header_len = 4 + 2 + good[5]  # magic, then the FileHeader chunk ([1][len][tag...])
    corrupt = tmp_path / "corrupt.xdf"
    corrupt.write_bytes(good[:header_len] + b"\x07" + good[header_len + 1 :])
    with pytest.raises(ValueError, match=rf"corrupt\.xdf': corrupt chunk at byte {header_len}"):
        read_xdf(corrupt)
    bad_tag = bytearray(good)
    bad_tag[header_len + 2 + (4 if good[header_len] == 4 else 1) - 1] = 99
    (tmp_path / "bad_tag.xdf").write_bytes(bytes(bad_tag))
    with pytest.raises(ValueError, match=r"bad_tag\.xdf': corrupt chunk .*tag 99"):
        read_xdf(tmp_path / "bad_tag.xdf")


def test_file_cut_at_any_byte_reads_the_complete_chunks(tmp_path):
    """A killed recorder leaves a partial last chunk: every cut point must still load."""
    path = tmp_path / "full.xdf"
    ends = []
    with XdfWriter(path) as writer:
        writer.add_stream(1, name="eeg", channel_count=3, nominal_srate=100, source_id="e")
        writer.add_stream(2, name="keys", channel_format="string", source_id="k")
        for k in range(3):
            writer.write_samples(
                1, _index_data(20 * k, 20), 10 + np.arange(20 * k, 20 * k + 20) / 100
            )
            if k == 2:  # one offset only: pyxdf's robust fit of several costs 75 ms a read
                writer.write_clock_offset(1, 10.0 + k, 1e-4)
            writer.write_samples(2, [[f"key:{k}"]], [10.1 + k])
            writer.write_boundary()
            ends.append(path.stat().st_size)
    raw = path.read_bytes()
    written = np.vstack([_index_data(20 * k, 20) for k in range(3)])
    cut_path = tmp_path / "cut.xdf"
    for cut in range(ends[1] - 30, len(raw)):  # every byte of the last round and the footers
        cut_path.write_bytes(raw[:cut])
        rec = read_xdf(cut_path, dejitter=False)
        n = rec.n_times
        np.testing.assert_array_equal(rec.data, written[:n])  # a prefix, no gap
        assert n >= 20 * sum(end <= cut for end in ends)
        assert ("truncated" in rec.meta) == (
            cut not in ends and cut < len(raw) and _mid_chunk(raw, cut)
        )
    cut_path.write_bytes(raw[: ends[1] + 5])
    with pytest.raises(ValueError, match=r"cut\.xdf': truncated: the file ends inside the chunk"):
        read_xdf(cut_path, strict=True)


def _mid_chunk(raw: bytes, cut: int) -> bool:
    """Whether ``cut`` falls inside a chunk of the XDF bytes ``raw`` (not between two)."""
    pos = 4
    while pos < cut:
        n_len = raw[pos]
        pos += 1 + n_len + int.from_bytes(raw[pos + 1 : pos + 1 + n_len], "little")
    return pos != cut


def test_writer_rejects_bad_calls(tmp_path):
    path = tmp_path / "w.xdf"
    writer = XdfWriter(path)
    writer.add_stream(1, name="eeg", channel_count=2)
    with pytest.raises(ValueError, match=r"'stream_id': 5 was never added.*add_stream\(5"):
        writer.write_samples(5, np.zeros((1, 2)), [0.0])
    with pytest.raises(ValueError, match=r"'data': expected \(3, 2\).*got shape \(3, 4\)"):
        writer.write_samples(1, np.zeros((3, 4)), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="stream 1 already added"):
        writer.add_stream(1, name="again")
    with pytest.raises(ValueError, match="'info': not an LSL stream header"):
        writer.add_stream(2, "<info><oops>")
    writer.close()
    writer.close()  # harmless twice
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_boundary()
    with pytest.raises(FileExistsError, match=r"w\.xdf': the file already exists"):
        XdfWriter(path)
    with pytest.raises(OSError, match=r"Cannot create the XDF file '.*nowhere/x\.xdf'"):
        XdfWriter(tmp_path / "nowhere" / "x.xdf")


def test_write_error_cuts_back_to_last_complete_chunk(tmp_path, spawn_python):
    """A file-size limit (as a full disk) hits mid-chunk: the file keeps whole chunks and loads."""
    path = tmp_path / "limited.xdf"
    proc = spawn_python(
        f"""
        import resource, numpy as np
        from acquisition.xdf import XdfWriter
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
        writer = XdfWriter({str(path)!r})
        writer.add_stream(1, name="eeg", channel_count=3, nominal_srate=100)
        k = 0
        try:
            while True:
                data = np.zeros((37, 3), np.float32)
                data[:, 0] = np.arange(37 * k, 37 * k + 37)
                writer.write_samples(1, data, np.arange(37 * k, 37 * k + 37) / 100)
                k += 1
        except OSError as err:
            print("ERROR", err)
        try:
            writer.write_boundary()
        except OSError as err:
            print("AGAIN", err)
        writer.close()
        """
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "ERROR [Errno 27] Writing the XDF file" in out and "File too large" in out
    assert "cut back to its last complete chunk" in out and "AGAIN" in out
    assert path.stat().st_size <= 20_000
    rec = read_xdf(path)
    assert "truncated" not in rec.meta
    np.testing.assert_array_equal(rec.data[:, 0], np.arange(rec.n_times))
    assert rec.n_times % 37 == 0 and rec.n_times > 37 * 10


def test_string_samples_as_bytes_and_bad_shape(tmp_path):
    path = tmp_path / "s.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, name="txt", channel_format="string")
        writer.write_samples(1, np.array([[b"raw bytes"], ["str"]], dtype=object), [1.0, 2.0])
        with pytest.raises(ValueError, match=r"expected \(1, 1\) strings.*got shape \(1, 2\)"):
            writer.write_samples(1, [["a", "b"]], [3.0])
    assert _load_raw(path)[0]["time_series"] == [["raw bytes"], ["str"]]


def test_varlen_lengths_of_a_large_chunk(tmp_path):
    """Chunks over 255 bytes use 4-byte lengths; check the bytes against the specification."""
    path = tmp_path / "big.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, name="eeg", channel_count=1, nominal_srate=1)
        start = path.stat().st_size
        writer.write_samples(1, np.zeros((300, 1), np.float32), np.arange(300.0))
    raw = path.read_bytes()[start:]
    # [4][Length: 2 tag + 4 id + 1+4 NumSamples(varlen 300) + 300 * (1 + 8 + 4)][Tag 3][Id 1]
    assert raw[0] == 4
    assert struct.unpack("<IHI", raw[1:11]) == (2 + 4 + 5 + 300 * 13, 3, 1)
    assert raw[11] == 4 and struct.unpack("<I", raw[12:16])[0] == 300


def test_missing_samples_become_gap_markers(tmp_path):
    rec = _recording()
    rec.timestamps[200:] += 0.75  # 0.75 s of samples missing after sample 199
    back = read_xdf(write_xdf(rec, tmp_path / "gap.xdf"), dejitter=False)
    assert back.markers_of("gap") == [Marker(rec.timestamps[199] + 1 / 250, "gap:0.750")]
    assert [m.value for m in back.markers if not m.value.startswith("gap:")] == [
        m.value for m in rec.markers
    ]


def test_stream_declaring_zero_channels_is_refused_by_name(tmp_path):
    """Such a stream crashed the replay (SIGFPE) and the FIF conversion (an MNE traceback)."""
    path = tmp_path / "zero.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(1, name="amp", stype="EEG", channel_count=0, nominal_srate=100.0)
        writer.write_samples(1, np.zeros((100, 0), np.float32), np.arange(100) / 100.0)
        writer.add_stream(2, name="keys", stype="Markers", channel_format="string")
        writer.write_samples(2, [["key:a"]], [0.5])
    with pytest.raises(ValueError, match=r"stream 'amp' of '.*zero\.xdf': it declares 0 channels"):
        read_xdf(path)
    good = write_xdf(_recording(), tmp_path / "good.xdf")
    with XdfWriter(tmp_path / "both.xdf") as writer:  # beside a good stream: the good one is read
        for sid, raw_stream in enumerate(pyxdf.load_xdf(good)[0][:1], 1):
            writer.add_stream(sid, name="amp", channel_count=3, nominal_srate=250.0)
            writer.write_samples(sid, raw_stream["time_series"], raw_stream["time_stamps"])
        writer.add_stream(2, name="empty", channel_count=0, nominal_srate=100.0)
        writer.write_samples(2, np.zeros((1000, 0), np.float32), np.arange(1000) / 100.0)
    assert read_xdf(tmp_path / "both.xdf").name == "amp"


def test_file_cut_in_half_keeps_the_markers_before_the_cut(tmp_path):
    """write_xdf interleaves markers with the data, as the recorder does, so a cut keeps them."""
    n, sfreq = 2500, 250.0
    markers = [Marker(100 + t, f"key:{i}") for i, t in enumerate(np.arange(0.5, 10, 1.0))]
    rec = Recording(
        _index_data(0, n), 100 + np.arange(n) / sfreq, sfreq, _recording().channels, markers
    )
    raw = write_xdf(rec, tmp_path / "full.xdf").read_bytes()
    (tmp_path / "half.xdf").write_bytes(raw[: len(raw) // 2])
    half = read_xdf(tmp_path / "half.xdf", dejitter=False)
    assert "truncated" in half.meta and 0 < half.n_times < n
    kept = [m for m in half.markers if m.value.startswith("key:")]
    expected = [m for m in markers if m.timestamp <= half.timestamps[-1]]
    assert kept == expected and len(kept) >= 3
