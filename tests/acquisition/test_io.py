"""Reading and writing recordings by file type: every vendor file in tests/data/real, BIDS.

XDF, broken files, and writing XDF or FIF by extension.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import mne
import mne_bids
import numpy as np
import pytest

from acquisition.channels import ChannelSpec
from acquisition.convert import raw_to_recording
from acquisition.io import (
    SUPPORTED_FORMATS,
    iter_chunks,
    open_recording,
    read_recording,
    write_recording,
)
from acquisition.recording import Marker, Recording

REAL_DIR = Path(__file__).parents[1] / "data" / "real"

# The README table of tests/data/real: channel types, rate, samples, annotation count, and the
# stim events MNE finds on each stim channel (channel -> (count, codes)).
REAL_FILES = {
    "test.sqd": dict(
        types={"mag": 157, "ref_meg": 3, "misc": 32, "stim": 1},
        sfreq=1000.0,
        n_times=2000,
        annotations=0,
        stim={"STI 014": (2, {255})},
    ),
    "test_ctf_comp_raw.fif": dict(
        types={"mag": 274, "ref_meg": 29, "misc": 35, "stim": 2},
        sfreq=480.0,
        n_times=241,
        annotations=0,
        stim={},  # UPPT001 stays 0 and UPPT002 stays 255: no transitions, no events
    ),
    "exported4D_linux_raw.fif": dict(
        types={"mag": 248, "stim": 2},
        sfreq=1017.25,
        n_times=305,
        annotations=0,
        stim={"STI 002": (15, {768})},
    ),
    "test.vhdr": dict(
        types={"eeg": 26, "misc": 6},
        sfreq=1000.0,
        n_times=7900,
        annotations=13,
        stim={},
    ),
    "test.bdf": dict(
        types={"eeg": 72, "stim": 1},
        sfreq=2048.0,
        n_times=2048,
        annotations=0,
        stim={"Status": (1, {128})},
    ),
    "test.edf": dict(
        types={"eeg": 138, "stim": 1},
        sfreq=512.0,
        n_times=3072,
        annotations=5,
        stim={"Status": (13, {4096, 4100})},
    ),
}


@pytest.mark.parametrize("fname", sorted(REAL_FILES))
def test_read_every_real_file(fname):
    """Names, types, rate, length, data and markers of each vendor file come through."""
    expected = REAL_FILES[fname]
    rec = read_recording(REAL_DIR / fname)
    raw = mne.io.read_raw(REAL_DIR / fname, preload=True, verbose="error")

    assert rec.sfreq == expected["sfreq"]
    assert rec.n_times == expected["n_times"]
    assert rec.channels.names == tuple(raw.ch_names)
    assert Counter(rec.channels.types) == Counter(expected["types"])
    np.testing.assert_array_equal(rec.data, raw.get_data().T)
    np.testing.assert_array_equal(rec.timestamps, np.arange(rec.n_times) / rec.sfreq)

    stim = [m for m in rec.markers if m.value.startswith("stim:")]
    annotations = [m for m in rec.markers if not m.value.startswith("stim:")]
    assert len(annotations) == expected["annotations"]
    for channel, (count, codes) in expected["stim"].items():
        mine = [m for m in stim if m.value.startswith(f"stim:{channel}:")]
        assert len(mine) == count
        assert {int(m.value.rsplit(":", 1)[1]) for m in mine} == codes
    assert len(stim) == sum(count for count, _ in expected["stim"].values())
    # Every marker lies on the recording (first sample at 0 s) and markers are sorted.
    times = np.array([m.timestamp for m in rec.markers])
    assert np.all(np.diff(times) >= 0)
    assert np.all((times >= 0) & (times < rec.duration))
    assert rec.meta["file"] == str(REAL_DIR / fname)


def test_units_and_positions_are_si():
    """MEG channels carry tesla and sensor positions in metres; EEG files without montage none."""
    kit = read_recording(REAL_DIR / "test.sqd")
    mags = [i for i, t in enumerate(kit.channels.types) if t == "mag"]
    assert {kit.channels.units[i] for i in mags} == {"T"}
    assert kit.channels.has_positions(mags)
    radius = np.linalg.norm(kit.channels.positions[mags], axis=1)
    assert np.all((radius > 0.03) & (radius < 0.3))  # metres from the head origin
    assert not np.isfinite(kit.channels.positions[kit.channels.types.index("misc")]).any()
    edf = read_recording(REAL_DIR / "test.edf")
    assert edf.channels.positions is None
    assert edf.channels.units[0] == "V"
    assert edf.channels.units[edf.channels.names.index("Status")] == "n/a"


def test_brainvision_annotations_keep_their_text_and_time():
    """Vendor annotation descriptions are the marker values, at their onset sample."""
    rec = read_recording(REAL_DIR / "test.vhdr")
    raw = mne.io.read_raw_brainvision(REAL_DIR / "test.vhdr", verbose="error")
    assert [m.value for m in rec.markers] == list(raw.annotations.description)
    np.testing.assert_allclose([m.timestamp for m in rec.markers], raw.annotations.onset)
    assert rec.markers[0] == Marker(pytest.approx(0.486), "Stimulus/S253")


def test_stim_events_sit_on_their_sample():
    """A stim code becomes ``stim:<channel>:<code>`` at the sample where it starts."""
    rec = read_recording(REAL_DIR / "test.bdf")
    (marker,) = rec.markers
    assert marker.value == "stim:Status:128"
    index = round(marker.timestamp * rec.sfreq)
    status = rec.data[:, rec.channels.names.index("Status")]
    assert status[index] == 128 and status[index - 1] != 128


def test_raw_to_recording_counts_time_from_first_sample():
    """An MNE Raw whose first_samp is not 0 still gets first sample = 0 s, markers aligned."""
    info = mne.create_info(["a", "b", "STI"], 100.0, ["eeg", "eeg", "stim"])
    data = np.zeros((3, 300))
    data[0] = np.arange(300)
    data[2, 120:125] = 7
    raw = mne.io.RawArray(data, info, first_samp=1000, verbose="error")
    raw.set_meas_date(1_700_000_000.0)
    raw.set_annotations(
        mne.Annotations([raw.first_time + 0.5], [0.1], ["key:a"], raw.info["meas_date"])
    )
    rec = raw_to_recording(raw, name="session")
    assert rec.name == "session"
    np.testing.assert_array_equal(rec.data[:, 0], np.arange(300))
    assert rec.timestamps[0] == 0.0
    assert [m.value for m in rec.markers] == ["key:a", "stim:STI:7"]
    assert rec.markers[0].timestamp == pytest.approx(0.5)
    assert rec.markers[1].timestamp == pytest.approx(1.2)
    assert rec.meta["first_samp"] == 1000
    assert rec.meta["meas_date"].startswith("2023-11-14")


@pytest.mark.parametrize("chunk", [1000, 333])
def test_iter_chunks_equals_whole_read(chunk):
    """Block-wise reading (lazy, from disk) gives the same samples and times as a whole read."""
    whole = read_recording(REAL_DIR / "test.edf")
    blocks = list(iter_chunks(REAL_DIR / "test.edf", chunk))
    assert all(len(d) == chunk for d, _ in blocks[:-1])
    np.testing.assert_array_equal(np.concatenate([d for d, _ in blocks]), whole.data)
    np.testing.assert_array_equal(np.concatenate([t for _, t in blocks]), whole.timestamps)
    from_memory = np.concatenate([d for d, _ in iter_chunks(whole, chunk)])
    np.testing.assert_array_equal(from_memory, whole.data)


def test_open_recording_reads_no_samples_up_front(tmp_path):
    """The reader of an MNE file knows header and markers without loading the data.

    The samples are read from disk when asked for: changed on disk after opening, they come
    back changed.
    """
    for name in ("test.vhdr", "test.vmrk", "test.eeg"):
        shutil.copy(REAL_DIR / name, tmp_path / name)
    reader = open_recording(tmp_path / "test.vhdr")
    assert reader.n_times == 7900 and len(reader.markers) == 13
    assert reader.meta["format"] == "brainvision"  # MNE's name of the format
    original, times = reader.read(100, 110)
    assert original.shape == (10, 32) and np.any(original != 0)
    np.testing.assert_array_equal(times, np.arange(100, 110) / 1000.0)
    data_file = tmp_path / "test.eeg"
    data_file.write_bytes(bytes(data_file.stat().st_size))  # same size, all samples zero now
    data, _ = reader.read(100, 110)
    np.testing.assert_array_equal(data, np.zeros_like(original))


def test_iter_chunks_rejects_bad_chunk_size():
    with pytest.raises(ValueError, match="'chunk_samples': 0"):
        iter_chunks(REAL_DIR / "test.bdf", 0)
    with pytest.raises(TypeError, match="'chunk_samples'"):
        iter_chunks(REAL_DIR / "test.bdf", 2.5)


def test_bids_dataset_file_and_bidspath(tmp_path):
    """A file inside a BIDS dataset is read through mne-bids (events.tsv, channels.tsv)."""
    raw = mne.io.read_raw_brainvision(REAL_DIR / "test.vhdr", verbose="error")
    bids_path = mne_bids.BIDSPath(subject="01", task="typing", datatype="eeg", root=tmp_path)
    bids_path = mne_bids.write_raw_bids(raw, bids_path, verbose=False)
    original = read_recording(REAL_DIR / "test.vhdr")
    uri = f"bids://{tmp_path}?subject=01&task=typing"
    for source in (bids_path.fpath, bids_path, uri):
        rec = read_recording(source)
        assert rec.meta["format"] == "BIDS"
        assert rec.channels.names == original.channels.names
        np.testing.assert_allclose(rec.data, original.data, rtol=1e-6, atol=1e-12)
        assert [m.value for m in rec.markers] == [m.value for m in original.markers]


def test_bids_uri_must_select_one_file(tmp_path):
    raw = mne.io.read_raw_edf(REAL_DIR / "test.edf", verbose="error")
    for task in ("a", "b"):
        bids_path = mne_bids.BIDSPath(subject="01", task=task, datatype="eeg", root=tmp_path)
        mne_bids.write_raw_bids(raw, bids_path, verbose=False)
    rec = read_recording(f"bids://{tmp_path}?subject=01&task=b")
    assert rec.n_times == 3072 and rec.meta["format"] == "BIDS"
    with pytest.raises(ValueError, match="exactly one BIDS data file; found sub-01_task-a_eeg"):
        read_recording(f"bids://{tmp_path}?subject=01")
    with pytest.raises(ValueError, match="found none"):
        read_recording(f"bids://{tmp_path}?subject=02")
    with pytest.raises(ValueError, match="not a valid BIDS URI"):
        read_recording(f"bids://{tmp_path}?subjekt=01")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_recording(f"bids://{tmp_path / 'nowhere'}?subject=01")


@pytest.mark.parametrize(
    ("fname", "fraction", "match"),
    [
        ("test.edf", 0.5, "truncated"),
        ("test.bdf", 0.01, "corrupt, truncated"),
        ("exported4D_linux_raw.fif", 0.5, "truncated"),
        ("test.sqd", 0.5, "corrupt, truncated"),
    ],
)
def test_truncated_file_error_names_the_file(tmp_path, fname, fraction, match):
    broken = tmp_path / f"broken_{fname}"
    content = (REAL_DIR / fname).read_bytes()
    broken.write_bytes(content[: int(len(content) * fraction)])
    with pytest.raises(ValueError, match=match) as info:
        read_recording(broken)
    assert str(broken) in str(info.value)


def test_garbage_file_error_names_the_file(tmp_path):
    garbage = tmp_path / "noise.sqd"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ValueError, match="noise.sqd.*corrupt, truncated or not the format"):
        read_recording(garbage)


def test_unknown_extension_lists_supported_formats(tmp_path):
    odd = tmp_path / "session.csv"
    odd.write_text("1,2,3\n")
    with pytest.raises(ValueError, match=r"session\.csv.*Supported: \.xdf \(XDF\).*\.vhdr"):
        read_recording(odd)
    assert {".xdf", ".fif", ".edf", ".bdf", ".vhdr", ".sqd", ".con", ".ds"} <= set(
        SUPPORTED_FORMATS
    )


@pytest.mark.parametrize("extension", [".gdf", ".set", ".cnt", ".nedf"])
def test_every_format_mne_reads_goes_to_mne(tmp_path, extension):
    """Formats beyond the common six reach mne.io.read_raw, whose failure names the file."""
    assert extension in SUPPORTED_FORMATS
    garbage = tmp_path / f"noise{extension}"
    garbage.write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.raises(ValueError, match=rf"noise\{extension}.*corrupt, truncated or not the"):
        read_recording(garbage)


@pytest.mark.parametrize("fname", ["missing.fif", "missing.xdf", "missing.csv"])
def test_missing_file_is_named(tmp_path, fname):
    with pytest.raises(FileNotFoundError, match=f"'.*{fname}' does not exist"):
        read_recording(tmp_path / fname)


def test_stream_argument_only_for_xdf():
    with pytest.raises(ValueError, match="'stream'.*not an XDF file"):
        read_recording(REAL_DIR / "test.edf", stream="EEG")


def test_copied_brainvision_set_reads_like_original(tmp_path):
    """A BrainVision header finds its .eeg/.vmrk next to it, wherever the set lives."""
    for name in ("test.vhdr", "test.vmrk", "test.eeg"):
        shutil.copy(REAL_DIR / name, tmp_path / name)
    copy = read_recording(tmp_path / "test.vhdr")
    original = read_recording(REAL_DIR / "test.vhdr")
    np.testing.assert_array_equal(copy.data, original.data)
    assert copy.markers == original.markers


def test_open_recording_wraps_in_memory_recording():
    """A Recording is played from memory: markers map to their nearest sample."""
    stamps = 100.0 + np.arange(10) * 0.01
    rec = Recording(
        data=np.zeros((10, 1)),
        timestamps=stamps,
        sfreq=100.0,
        channels=ChannelSpec.generic(1),
        markers=[Marker(100.031, "key:a"), Marker(99.0, "early"), Marker(100.5, "late")],
    )
    reader = open_recording(rec)
    assert reader.to_recording() is rec
    assert [m.value for m in reader.markers] == ["early", "key:a", "late"]
    np.testing.assert_array_equal(reader.marker_samples(), [0, 3, 9])


def test_xdf_is_read_through_the_xdf_reader(tmp_path):
    """``.xdf`` goes to acquisition.xdf (loaded whole); blocks and markers come through."""
    n_times, sfreq = 300, 100.0
    rec = Recording(
        data=np.column_stack([np.arange(n_times), np.cos(np.arange(n_times))]),
        timestamps=5000.0 + np.arange(n_times) / sfreq,
        sfreq=sfreq,
        channels=ChannelSpec(("index", "Cz"), ("misc", "eeg"), ("n/a", "V")),
        markers=[Marker(5000.5, "key:a"), Marker(5001.25, "sentence_end:a")],
        name="session",
    )
    path = write_recording(rec, tmp_path / "session.xdf")
    got = read_recording(path)
    np.testing.assert_array_equal(got.data, rec.data)
    assert got.channels.names == rec.channels.names
    assert [m.value for m in got.markers] == ["key:a", "sentence_end:a"]
    np.testing.assert_array_equal(open_recording(path).marker_samples(), [50, 125])
    blocks = list(iter_chunks(path, 128))
    assert [len(d) for d, _ in blocks] == [128, 128, 44]
    np.testing.assert_array_equal(np.concatenate([d for d, _ in blocks]), rec.data)


def test_write_recording_picks_the_format_by_extension(tmp_path):
    """``.xdf`` is written as XDF, ``.fif`` as FIF; anything else is refused with the fix."""
    rec = Recording(
        data=np.column_stack([np.arange(200.0), np.zeros(200)]),
        timestamps=100.0 + np.arange(200) / 100.0,
        sfreq=100.0,
        channels=ChannelSpec(("index", "Cz"), ("misc", "eeg"), ("n/a", "V")),
        markers=[Marker(100.5, "key:a")],
    )
    for name in ("rec.xdf", "rec_raw.fif"):
        back = read_recording(write_recording(rec, tmp_path / name))
        np.testing.assert_array_equal(back.data[:, 0], np.arange(200))
        assert [m.value for m in back.markers] == ["key:a"]
    assert read_recording(tmp_path / "rec.xdf").meta["stream_type"] == "EEG"
    with pytest.raises(ValueError, match=r"'path'.*rec\.edf.*Use \.xdf.*or \.fif"):
        write_recording(rec, tmp_path / "rec.edf")
