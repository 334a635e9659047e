"""Channel metadata: the one modality rule, type and unit names, and the LSL header round trip."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.channels import (
    ChannelSpec,
    channels_from_info,
    make_stream_info,
    mne_channel_type,
    modality_of,
    si_unit,
)


@pytest.mark.parametrize(
    ("types", "modality", "stream_type"),
    [
        (["mag", "grad", "grad", "stim"], "meg", "MEG"),
        (["grad"], "meg", "MEG"),
        (["mag", "eeg", "eog"], "meg", "MEG"),  # MEG systems record EEG too
        (["seeg", "seeg", "misc"], "ieeg", "iEEG"),
        (["ecog"], "ieeg", "iEEG"),
        (["dbs", "dbs"], "ieeg", "iEEG"),
        (["seeg", "eeg"], "ieeg", "iEEG"),  # scalp EEG beside depth electrodes
        (["eeg", "eog", "stim"], "eeg", "EEG"),
        (["misc", "stim"], None, "misc"),
    ],
)
def test_modality_rule(types, modality, stream_type):
    """MEG over iEEG (sEEG, ECoG, DBS) over EEG; None without a brain sensor."""
    spec = ChannelSpec.generic(len(types))
    spec = ChannelSpec(spec.names, types, spec.units)
    assert spec.modality == modality == modality_of(types)
    assert spec.stream_type == stream_type
    assert modality_of([t.upper() for t in types]) == modality  # LSL headers spell types freely


def test_modality_channels_are_the_brain_sensors_of_the_modality():
    spec = ChannelSpec(
        ["D1", "D2", "Cz", "EOG", "TRIG"],
        ["dbs", "seeg", "eeg", "eog", "stim"],
        ["V", "V", "V", "V", "n/a"],
    )
    assert spec.modality == "ieeg"
    assert spec.modality_channels() == ("D1", "D2")
    only_stim = ChannelSpec(["TRIG"], ["stim"], ["n/a"])
    assert only_stim.modality_channels() == ()


@pytest.mark.parametrize(
    ("name", "mne_type"),
    [("EEG", "eeg"), ("MEGMAG", "mag"), ("megGrad", "grad"), ("iEEG", "seeg"), ("EXG", "misc")],
)
def test_channel_type_names_map_to_mne(name, mne_type):
    assert mne_channel_type(name) == mne_type


@pytest.mark.parametrize(
    ("unit", "expected"),
    [("microvolts", ("V", 1e-6)), ("uV", ("V", 1e-6)), ("fT", ("T", 1e-15)), ("n/a", ("n/a", 1))],
)
def test_unit_names_map_to_si(unit, expected):
    assert si_unit(unit) == expected


def test_stream_info_round_trip_keeps_names_types_units_positions():
    positions = np.array([[0.0, 0.05, 0.09], [np.nan] * 3])
    spec = ChannelSpec(["Cz", "TRIG"], ["eeg", "stim"], ["V", "n/a"], positions)
    back = channels_from_info(make_stream_info("amp", spec.stream_type, spec, 250.0, "amp-1"))
    assert back == spec and back.modality == "eeg"
    np.testing.assert_allclose(back.positions, positions)
