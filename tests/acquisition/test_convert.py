"""Recording -> MNE Raw, XDF -> FIF and XDF -> BIDS, checked by reading the results back."""

from __future__ import annotations

import mne
import mne_bids
import numpy as np
import pytest

from acquisition.channels import ChannelSpec
from acquisition.convert import (
    lsl_first_timestamp,
    recording_to_raw,
    write_bids,
    write_fif,
)
from acquisition.io import convert, write_recording
from acquisition.recording import Marker, Recording

SFREQ = 200.0
T0 = 5000.25  # an LSL clock reading: far from zero, as on a real machine


def _eeg_recording(n_times: int = 600) -> Recording:
    """A 5-channel EEG recording whose channel 0 is the sample index, with typing markers."""
    rng = np.random.default_rng(7)
    data = (rng.standard_normal((n_times, 5)) * 20e-6).astype(np.float32)
    data[:, 0] = np.arange(n_times)
    positions = np.array(
        [[np.nan] * 3, [0.0, 0.07, 0.05], [0.0, 0.0, 0.09], [0.0, -0.07, 0.05], [0.07, 0, 0.04]]
    )
    channels = ChannelSpec(
        ["index", "Fz", "Cz", "Pz", "T8"],
        ["misc", "eeg", "eeg", "eeg", "eeg"],
        ["n/a", "V", "V", "V", "V"],
        positions,
    )
    markers = [
        Marker(T0 + 0.5, "sentence_start:hello world"),
        Marker(T0 + 1.0, "key:h"),
        Marker(T0 + 1.25, "key:space"),
        Marker(T0 + 2.0, "sentence_end:hello world"),
    ]
    return Recording(
        data,
        T0 + np.arange(n_times) / SFREQ,
        SFREQ,
        channels,
        markers,
        name="sim-eeg",
        source_id="sim-eeg-1",
    )


def test_recording_to_raw_types_units_positions_annotations():
    rec = _eeg_recording()
    rec.channels = ChannelSpec(
        rec.channels.names,
        rec.channels.types,
        ["n/a", "uV", "uV", "uV", "uV"],
        rec.channels.positions,
    )
    rec.markers = [*rec.markers, Marker(T0 - 1.0, "key:early"), Marker(T0 + 99, "key:late")]
    raw = recording_to_raw(rec)
    assert raw.ch_names == list(rec.channels.names)
    assert raw.get_channel_types() == ["misc", "eeg", "eeg", "eeg", "eeg"]
    # microvolts in the recording -> volts in MNE; the misc index channel is left as is
    np.testing.assert_allclose(raw.get_data()[1], rec.data[:, 1] * 1e-6, rtol=1e-6)
    np.testing.assert_array_equal(raw.get_data()[0], np.arange(rec.n_times))
    np.testing.assert_allclose(raw.info["chs"][2]["loc"][:3], [0.0, 0.0, 0.09])
    assert np.isnan(raw.info["chs"][0]["loc"][:3]).all()
    # markers outside the data are dropped, the others sit on the sample clock
    assert list(raw.annotations.description) == [m.value for m in _eeg_recording().markers]
    np.testing.assert_allclose(raw.annotations.onset, [0.5, 1.0, 1.25, 2.0], atol=1e-9)
    assert lsl_first_timestamp(raw) == T0


def test_markers_follow_samples_across_a_gap():
    """With a gap in the timestamps, annotations stay on the sample where the marker happened."""
    rec = _eeg_recording()
    rec.timestamps[300:] += 10.0  # 10 s of data missing after sample 299
    rec.markers = [Marker(rec.timestamps[400], "key:x")]
    raw = recording_to_raw(rec)
    assert raw.time_as_index(raw.annotations.onset)[0] == 400


def test_xdf_to_fif_preserves_data_names_annotations_and_clock(tmp_path):
    rec = _eeg_recording()
    xdf_path = write_recording(rec, tmp_path / "session.xdf")
    fif_path = convert(xdf_path, tmp_path / "session_raw.fif")
    raw = mne.io.read_raw_fif(fif_path, preload=True, verbose=False)
    assert raw.ch_names == list(rec.channels.names)
    assert raw.info["sfreq"] == SFREQ
    np.testing.assert_array_equal(raw.get_data().T.astype(np.float32), rec.data)
    assert list(raw.annotations.description) == [m.value for m in rec.markers]
    np.testing.assert_allclose(raw.annotations.onset, [0.5, 1.0, 1.25, 2.0], atol=1e-6)
    assert lsl_first_timestamp(raw) == pytest.approx(T0, abs=1e-6)
    montage = raw.get_montage()
    np.testing.assert_allclose(montage.get_positions()["ch_pos"]["Cz"], [0, 0, 0.09], atol=1e-6)


def test_write_recording_to_fif_by_extension(tmp_path):
    rec = _eeg_recording()
    rec.data = rec.data.astype(np.float64)
    path = write_recording(rec, tmp_path / "direct.fif")  # any .fif name is accepted
    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")  # MNE frowns on the name
    np.testing.assert_array_equal(raw.get_data().T, rec.data)  # float64 kept in double FIF
    with pytest.raises(FileExistsError):
        write_fif(rec, path)


def test_xdf_to_bids_eeg_readable_with_events(tmp_path):
    rec = _eeg_recording()
    xdf_path = write_recording(rec, tmp_path / "session.xdf")
    root = tmp_path / "bids"
    data_file = convert(xdf_path, f"{root}/", subject="01", session="1", task="typing", run=1)
    assert data_file.suffix == ".vhdr" and data_file.exists()
    bids_path = mne_bids.BIDSPath(
        subject="01", session="1", task="typing", run=1, datatype="eeg", root=root
    )
    # mne-bids lists the misc index channel in electrodes.tsv with n/a and says so on reading
    with (
        pytest.warns(RuntimeWarning, match=r"without locations.*\['index'\]"),
        pytest.warns(RuntimeWarning, match=r"Not setting position of 1 misc channel"),
    ):
        raw = mne_bids.read_raw_bids(bids_path, verbose=False)
    assert raw.ch_names == list(rec.channels.names)
    np.testing.assert_allclose(raw.get_data()[1:].T, rec.data[:, 1:], rtol=1e-5, atol=1e-12)
    assert list(raw.annotations.description) == [m.value for m in rec.markers]
    np.testing.assert_allclose(raw.annotations.onset, [0.5, 1.0, 1.25, 2.0], atol=1e-6)
    events_tsv = bids_path.copy().update(suffix="events", extension=".tsv").fpath
    assert "key:space" in events_tsv.read_text()
    assert (root / "dataset_description.json").exists()


def test_bids_meg_goes_to_fif(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    channels = ChannelSpec(
        ["MEG0111", "MEG0112", "STI001"],
        ["mag", "grad", "stim"],
        ["T", "T/m", "n/a"],
        np.array([[0.0, 0.05, 0.1], [0.0, 0.05, 0.1], [np.nan] * 3]),
    )
    data = np.column_stack(
        [rng.standard_normal(n) * 1e-12, rng.standard_normal(n) * 1e-11, 0 * np.arange(n)]
    )
    rec = Recording(data, np.arange(n) / 1000.0, 1000.0, channels, [Marker(0.1, "key:a")])
    bids_path = write_bids(rec, tmp_path / "bids", "02", task="typing")
    assert bids_path.fpath.suffix == ".fif"
    raw = mne_bids.read_raw_bids(bids_path, verbose=False)
    assert raw.get_channel_types() == ["mag", "grad", "stim"]
    np.testing.assert_allclose(raw.get_data()[:2].T, data[:, :2], rtol=1e-5)
    assert list(raw.annotations.description) == ["key:a"]


def test_convert_errors(tmp_path):
    rec = _eeg_recording()
    xdf_path = write_recording(rec, tmp_path / "s.xdf")
    with pytest.raises(ValueError, match=r"'in_path'.*not an XDF file"):
        convert(tmp_path / "s.edf", tmp_path / "out.fif")
    with pytest.raises(ValueError, match=r"'out'.*neither a \.fif file nor a BIDS folder"):
        convert(xdf_path, tmp_path / "out.edf")
    with pytest.raises(ValueError, match=r"'subject': 'sub-01'.*letters and digits"):
        convert(xdf_path, tmp_path / "bids", subject="sub-01")
    misc_only = Recording(
        np.zeros((10, 1)), np.arange(10.0), 1.0, ChannelSpec.generic(1), name="aux"
    )
    with pytest.raises(ValueError, match=r"no MEG, EEG or iEEG channel.*\['misc'\]"):
        write_bids(misc_only, tmp_path / "bids", "01")


def _tree(root) -> dict:
    """Every file under ``root`` with its content (folders as None)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def test_a_bids_write_that_fails_part_way_leaves_the_dataset_as_it_was(tmp_path):
    """mne-bids leaves what it wrote when a late step fails; write_bids undoes it.

    The failure is real: the new subject's scans.tsv, which mne-bids writes after the data
    and the sidecars, is a folder in the way.
    """
    root = tmp_path / "bids"
    write_bids(_eeg_recording(), root, "01", session="1", task="typing")
    obstacle = root / "sub-02" / "ses-1" / "sub-02_ses-1_scans.tsv"
    obstacle.mkdir(parents=True)
    before = _tree(root)
    with pytest.raises(OSError):
        write_bids(_eeg_recording(), root, "02", session="1", task="typing")
    assert _tree(root) == before  # no file of sub-02 left; participants.tsv without sub-02
    obstacle.rmdir()
    bids_path = write_bids(_eeg_recording(), root, "02", session="1", task="typing")
    assert bids_path.fpath.exists() and "sub-02" in (root / "participants.tsv").read_text()
