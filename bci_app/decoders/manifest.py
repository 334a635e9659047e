"""The decoder bundle manifest (``manifest.json``) as typed, frozen records, validated when read.

Schema (format ``"bci-app-bundle"``, version 1): a JSON object whose nested objects become nested
records. :class:`Manifest` holds ``name``, ``task``, ``stream`` (:class:`Stream`: rate and
:class:`~acquisition.channels.ChannelSpec`) and ``graphs`` (role -> :class:`GraphEntry`), always;
the rest is optional: ``arch``, ``model_config``, ``preprocessing``
(:class:`~bci_app.processing.preprocessing.PreprocessConfig`), ``window`` (:class:`Window`),
``classes``, ``lm`` (:class:`LmSpec`), ``decoding`` (:class:`Decoding`), ``subject``
(:class:`Subject`), ``ctc`` (:class:`Ctc`), ``logit_scale``, ``audio_features`` and ``mel``
(speech), ``demo`` (:class:`Demo`), ``provenance`` (:class:`Provenance`), ``metrics`` and
``export`` (role -> :class:`ExportCheck`). A missing optional section is ``None``.

:meth:`Manifest.from_dict` checks every type, required key and range, and refuses file names that
leave the bundle folder (absolute paths, ``..``); a problem is one :class:`ManifestError` (a
``ValueError``) naming the file, the key and the fix. ``model_config``, ``metrics``,
``audio_features``, ``mel``, ``demo.simulator`` and the ``extra`` mappings are free-form JSON
owned by other modules (the model registry, the trainer, the audio features, the simulator); they
are kept as read-only mappings (:data:`JsonMap`, lists as tuples) and :func:`thaw` turns them back
into plain JSON.

Round trip: ``Manifest.from_dict(d, path).to_dict() == d`` for every valid manifest ``d``. Keys
this version does not know are kept, per record, in ``extra`` and written back, so a manifest from
a newer writer loads and survives :func:`~bci_app.decoders.bundle.update_manifest` (except in
``preprocessing``: an unknown preprocessing parameter would change the signal, so it is refused).
A missing optional key and ``null`` mean the same (None); a manifest read writes back ``null``
where the file had it. ``stream.channels`` and ``preprocessing``, whose types belong to
:mod:`acquisition.channels` and :mod:`bci_app.processing.preprocessing`, are written back as they
were read, so a field those types gain later does not change old manifests. A record built in
code, or a ``dataclasses.replace`` copy, writes the canonical form: those two through their own
``to_dict``, ``window.baseline``, ``window.clamp`` and ``provenance.git_commit`` as ``null`` when
unset, other unset keys left out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import Any, NamedTuple, NoReturn

import numpy as np

from acquisition.channels import ChannelSpec
from bci_app.processing.preprocessing import PreprocessConfig

FORMAT = "bci-app-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: The fix named by most manifest errors.
REEXPORT = "Re-export the bundle with 'bci-app export' (or retrain it with 'bci-app train')."
#: A read-only JSON object: nested objects are read-only mappings, arrays are tuples.
JsonMap = Mapping[str, Any]

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest that breaks the schema; the message names the file, the key and the fix."""


# ------------------------------------------------------------------------------- JSON helpers
def freeze(value: Any) -> Any:
    """Return a read-only copy of a JSON value: objects as mappings, arrays as tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Return a plain JSON copy (dicts and lists) of a value made by :func:`freeze`."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def _empty() -> JsonMap:
    return MappingProxyType({})


def _show(value: Any) -> str:
    """A short JSON-flavoured description of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class _At:
    """Where a value sits (the manifest file and the key path), to name it in messages."""

    source: str
    key: str = ""

    def __truediv__(self, key: str | int) -> _At:
        if isinstance(key, int):
            return _At(self.source, f"{self.key}[{key}]")
        return _At(self.source, f"{self.key}.{key}" if self.key else key)

    def fail(self, problem: str, fix: str = REEXPORT) -> NoReturn:
        where = f"'{self.key}' " if self.key else ""
        raise ManifestError(f"Invalid bundle manifest {self.source}: {where}{problem}. {fix}")


# ------------------------------------------------------------------------------------ codecs
class _Codec(NamedTuple):
    """How one kind of value is read from JSON (with checks) and written back."""

    parse: Callable[[Any, _At], Any]
    dump: Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _object(value: Any, at: _At) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        at.fail(f"must be a JSON object, got {_show(value)}")
    return value


def _string(value: Any, at: _At) -> str:
    if not isinstance(value, str):
        at.fail(f"must be a string, got {_show(value)}")
    return value


def _name(value: Any, at: _At) -> str:
    if not _string(value, at).strip():
        at.fail("must be a non-empty string")
    return value


def _integer(minimum: int | None = None) -> _Codec:
    def parse(value: Any, at: _At) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            at.fail(f"must be an integer, got {_show(value)}")
        if minimum is not None and value < minimum:
            at.fail(f"must be >= {minimum}, got {value}")
        return value

    return _Codec(parse, _same)


def _number(*, positive: bool = False, nonnegative: bool = False) -> _Codec:
    def parse(value: Any, at: _At) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            at.fail(f"must be a number, got {_show(value)}")
        if not math.isfinite(value):
            at.fail(f"must be a finite number, got {value}")
        if positive and not value > 0:
            at.fail(f"must be > 0, got {value}")
        if nonnegative and value < 0:
            at.fail(f"must be >= 0, got {value}")
        return value  # an int stays an int, so the JSON is written back as it was

    return _Codec(parse, _same)


def _strings(value: Any, at: _At) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        at.fail(f"must be a list of strings, got {_show(value)}")
    for i, item in enumerate(value):
        _string(item, at / i)
    return tuple(value)


def _json_object(value: Any, at: _At) -> JsonMap:
    return freeze(_object(value, at))


def _relative_file(value: Any, at: _At) -> str:
    """A file name inside the bundle folder (never absolute, never through ``..``)."""
    if not isinstance(value, str):
        at.fail(
            f"must be a file name (a string), got {_show(value)}",
            "Give the name of a file inside the bundle folder, such as 'encoder.onnx'. " + REEXPORT,
        )
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    escapes = (
        not value.strip()
        or "\x00" in value
        or posix.is_absolute()
        or windows.is_absolute()
        or bool(windows.drive)
        or ".." in posix.parts
        or ".." in windows.parts
        or posix.name in ("", ".")
    )
    if escapes:
        at.fail(
            f"must name a file inside the bundle folder, got {value!r}",
            "A bundle only reads its own files: give a name relative to the bundle folder, "
            "without '..' or a leading '/', such as 'encoder.onnx'. " + REEXPORT,
        )
    return value


def _sha256(value: Any, at: _At) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        at.fail(
            f"must be the file's sha256 (64 lower-case hex digits), got {_show(value)}",
            "Re-export the bundle with 'bci-app export' (save_bundle writes the checksums).",
        )
    return value


def _baseline(value: Any, at: _At) -> tuple[float | None, float | None]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        at.fail(f"must be [start, end] in seconds (null for the window edge), got {_show(value)}")
    check = _number().parse
    return tuple(None if v is None else check(v, at / i) for i, v in enumerate(value))


def _dump_tuple(value: tuple) -> list:
    return list(value)


def _channels(value: Any, at: _At) -> ChannelSpec:
    """``stream.channels`` (unknown keys are kept by ``keep_json``)."""
    obj = _object(value, at)
    if not any(k in obj for k in ("names", "types", "units", "positions")):
        return ChannelSpec((), (), ())  # "channels": {} (a bundle that reads no channel)
    lists = {}
    for key in ("names", "types", "units"):
        if key not in obj:
            (at / key).fail("is missing")
        lists[key] = _strings(obj[key], at / key)
    n = len(lists["names"])
    for key in ("types", "units"):
        if len(lists[key]) != n:
            (at / key).fail(f"has {len(lists[key])} entries for {n} channel names")
    if len(set(lists["names"])) != n:
        (at / "names").fail("has duplicate channel names")
    positions = obj.get("positions")
    if positions is not None:
        shape_problem = f"must be one [x, y, z] (metres, null if unknown) per channel ({n})"
        if not isinstance(positions, (list, tuple)) or len(positions) != n:
            (at / "positions").fail(f"{shape_problem}, got {_show(positions)}")
        rows, check = [], _number().parse
        for i, row in enumerate(positions):
            if not isinstance(row, (list, tuple)) or len(row) != 3:
                (at / "positions" / i).fail(f"{shape_problem}, got {_show(row)}")
            rows.append([np.nan if v is None else check(v, at / "positions" / i) for v in row])
        positions = np.array(rows, dtype=float).reshape(n, 3)
        positions.flags.writeable = False  # the manifest is frozen; copy before changing
    return ChannelSpec(lists["names"], lists["types"], lists["units"], positions)


def _channels_dump(spec: ChannelSpec) -> dict[str, Any]:
    return spec.to_dict()


_KIND_NAMES = {int: "a number", str: "a string", bool: "true or false", list: "a list"}
_KIND_NAMES.update({dict: "an object", type(None): "null"})


def _json_kinds(hint: Any) -> set[type] | None:
    """JSON types a field of type ``hint`` accepts (None: no check)."""
    if hint is type(None) or hint in (str, bool):
        return {hint}
    if hint in (int, float):
        return {int}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [_json_kinds(arg) for arg in typing.get_args(hint)]
        return None if None in kinds else set().union(*kinds)
    if hint in (tuple, list) or origin in (tuple, list):
        return {list}
    if dataclasses.is_dataclass(hint) or hint in (dict, Mapping) or origin in (dict, Mapping):
        return {dict}
    return None


def _preprocessing(value: Any, at: _At) -> PreprocessConfig:
    obj = _object(value, at)
    try:
        hints = typing.get_type_hints(PreprocessConfig)
    except (NameError, TypeError):  # a hint that does not resolve: PreprocessConfig checks alone
        hints = {}
    for key, item in obj.items():
        kinds = _json_kinds(hints[key]) if key in hints else None
        if kinds is None:
            continue
        kind = {bool: bool, float: int, tuple: list, MappingProxyType: dict}.get(type(item))
        kind = kind or (dict if isinstance(item, Mapping) else type(item))
        if kind not in kinds:
            wanted = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in sorted(kinds, key=str))
            (at / key).fail(f"must be {wanted}, got {_show(item)}")
    try:
        return PreprocessConfig.from_dict(dict(obj))
    except (TypeError, ValueError) as err:
        at.fail(f"is not a valid preprocessing configuration ({err})")


def _preprocessing_dump(config: PreprocessConfig) -> dict[str, Any]:
    return config.to_dict()


# ----------------------------------------------------------------------------------- records
def _meta(
    codec: _Codec, *, required: bool = False, keep_null: bool = False, keep_json: bool = False
) -> dict[str, Any]:
    """Field metadata of a record field read from the JSON key of the same name.

    ``required``: the key must be in the JSON (a default is then only the constructor's).
    ``keep_null``: a record built (not read) writes ``null`` when unset (bci-app's writers always
    write the key); a record read writes ``null`` where the file had it.
    ``keep_json``: the value's type belongs to another module (ChannelSpec, PreprocessConfig),
    whose own ``to_dict`` may write more keys than the file has; the JSON read is written back
    instead, as long as the record is the one read (a ``dataclasses.replace`` copy writes the
    value's ``to_dict``).
    """
    return {"codec": codec, "required": required, "keep_null": keep_null, "keep_json": keep_json}


def _json_fields(cls: type) -> Iterator[Any]:
    return (f for f in fields(cls) if "codec" in f.metadata)


class _Record:
    """Shared reading and writing of the records: known keys typed, unknown ones in ``extra``."""

    extra: JsonMap
    # Set on the instance by ``_parse`` only (not dataclass fields, so a dataclasses.replace()
    # copy does not inherit them): the JSON read for ``keep_json`` fields, and the known keys the
    # file gave as null (None: the record was built, not read).
    _json_read: Mapping[str, Any] = MappingProxyType({})
    _nulls: frozenset[str] | None = None

    @classmethod
    def _parse(cls, value: Any, at: _At) -> Any:
        obj = _object(value, at)
        kwargs: dict[str, Any] = {}
        kept: dict[str, Any] = {}
        known = set()
        for f in _json_fields(cls):
            known.add(f.name)
            raw = obj.get(f.name)
            if raw is None and f.metadata["required"]:
                if f.name not in obj:
                    (at / f.name).fail("is missing")
            elif raw is None:
                continue
            kwargs[f.name] = f.metadata["codec"].parse(raw, at / f.name)
            if f.metadata["keep_json"]:
                kept[f.name] = freeze(raw)
        extra = freeze({k: v for k, v in obj.items() if k not in known})
        record = cls(**kwargs, extra=extra)
        nulls = frozenset(k for k in known if k in obj and obj[k] is None)
        object.__setattr__(record, "_nulls", nulls)
        if kept:
            object.__setattr__(record, "_json_read", MappingProxyType(kept))
        record._check(at)
        return record

    def _check(self, at: _At) -> None:
        """Checks across keys (after each key was read)."""

    def _written(self, f: Any) -> bool:
        """Whether ``to_dict`` writes the key of field ``f`` (a None as null: as read, if read)."""
        if getattr(self, f.name) is not None:
            return True
        return f.metadata["keep_null"] if self._nulls is None else f.name in self._nulls

    def _dump(self, f: Any) -> Any:
        """The JSON that ``to_dict`` writes for field ``f`` (a new object)."""
        value = getattr(self, f.name)
        if value is None:
            return None
        if f.name in self._json_read:
            return thaw(self._json_read[f.name])
        return f.metadata["codec"].dump(value)

    def to_dict(self) -> dict[str, Any]:
        """Return the record as plain JSON (unknown keys from ``extra`` included)."""
        out = {f.name: self._dump(f) for f in _json_fields(type(self)) if self._written(f)}
        out.update(thaw(self.extra))
        return out


def _record(cls: type) -> _Codec:
    return _Codec(cls._parse, lambda record: record.to_dict())


def _records_by_key(cls: type, what: str) -> _Codec:
    def parse(value: Any, at: _At) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            at.fail(f"must be a JSON object mapping each {what}, got {_show(value)}")
        return MappingProxyType({k: cls._parse(v, at / k) for k, v in value.items()})

    return _Codec(parse, lambda records: {k: r.to_dict() for k, r in records.items()})


def _records_list(cls: type) -> _Codec:
    def parse(value: Any, at: _At) -> tuple:
        if not isinstance(value, (list, tuple)):
            at.fail(f"must be a list of JSON objects, got {_show(value)}")
        return tuple(cls._parse(v, at / i) for i, v in enumerate(value))

    return _Codec(parse, lambda records: [r.to_dict() for r in records])


def _precision(value: Any, at: _At) -> str:
    if value not in ("fp32", "fp16"):
        at.fail(f"must be 'fp32' or 'fp16', got {_show(value)}")
    return value


_STR = _Codec(_string, _same)
_PRECISION = _Codec(_precision, _same)
_NAME = _Codec(_name, _same)
_STRS = _Codec(_strings, _dump_tuple)
_OBJECT = _Codec(_json_object, thaw)
_FILE = _Codec(_relative_file, _same)
_HASH = _Codec(_sha256, _same)
_BASELINE = _Codec(_baseline, _dump_tuple)
_NUMBER = _number()
_POSITIVE = _number(positive=True)
_NONNEGATIVE = _number(nonnegative=True)
_INT = _integer()
_COUNT = _integer(1)
_INDEX = _integer(0)


@dataclass(frozen=True, kw_only=True)
class GraphEntry(_Record):
    """One ONNX graph of the bundle (``graphs.<role>``).

    Attributes
    ----------
    file : str
        File name relative to the bundle folder.
    sha256 : str
        Hex sha256 of the file (checked by :func:`~bci_app.decoders.bundle.load_bundle`).
    inputs, outputs : tuple of str | None
        Tensor names of the graph, when the writer recorded them (checked at load).
    """

    file: str = field(metadata=_meta(_FILE, required=True))
    sha256: str = field(metadata=_meta(_HASH, required=True))
    inputs: tuple[str, ...] | None = field(default=None, metadata=_meta(_STRS))
    outputs: tuple[str, ...] | None = field(default=None, metadata=_meta(_STRS))
    extra: JsonMap = field(default_factory=_empty)


@dataclass(frozen=True, kw_only=True)
class Stream(_Record):
    """The stream the decoder expects (``stream``): rate and channels, in reading order.

    Attributes
    ----------
    sfreq : float
        Sampling rate of the incoming stream, in Hz.
    channels : ChannelSpec
        Channels the decoder reads (positions read-only).
    """

    sfreq: float = field(metadata=_meta(_POSITIVE, required=True))
    channels: ChannelSpec = field(
        metadata=_meta(_Codec(_channels, _channels_dump), required=True, keep_json=True)
    )
    extra: JsonMap = field(default_factory=_empty)


@dataclass(frozen=True, kw_only=True)
class Window(_Record):
    """Span of the decoder's brain windows (``window``), relative to their anchor, in seconds.

    Attributes
    ----------
    tmin, tmax : float
        Window span around the anchor (keystroke, or the heard word shifted by ``brain_shift``).
    sfreq : float
        Rate of the windows (after preprocessing), in Hz.
    baseline : (float | None, float | None) | None
        Baseline span (None edges: the window's); None: no baseline correction.
    clamp : float | None
        Clip after the baseline to ``[-clamp, clamp]``.
    audio_tmin, audio_tmax : float | None
        Speech: span of the heard audio segment around the word onset.
    brain_shift : float | None
        Speech: brain delay added to the audio span.
    """

    tmin: float = field(metadata=_meta(_NUMBER, required=True))
    tmax: float = field(metadata=_meta(_NUMBER, required=True))
    sfreq: float = field(metadata=_meta(_POSITIVE, required=True))
    baseline: tuple[float | None, float | None] | None = field(
        default=None, metadata=_meta(_BASELINE, keep_null=True)
    )
    clamp: float | None = field(default=None, metadata=_meta(_POSITIVE, keep_null=True))
    audio_tmin: float | None = field(default=None, metadata=_meta(_NUMBER))
    audio_tmax: float | None = field(default=None, metadata=_meta(_NUMBER))
    brain_shift: float | None = field(default=None, metadata=_meta(_NUMBER))
    extra: JsonMap = field(default_factory=_empty)

    def _check(self, at: _At) -> None:
        if not self.tmax > self.tmin:
            (at / "tmax").fail(f"must be greater than tmin ({self.tmin}), got {self.tmax}")
        if (self.audio_tmin is None) != (self.audio_tmax is None):
            at.fail("must give both audio_tmin and audio_tmax, or neither")
        if self.audio_tmin is not None and not self.audio_tmax > self.audio_tmin:
            (at / "audio_tmax").fail(f"must be greater than audio_tmin ({self.audio_tmin})")

    @property
    def n_times(self) -> int:
        """Samples per brain window."""
        return round((self.tmax - self.tmin) * self.sfreq)

    @property
    def audio_n_times(self) -> int | None:
        """Frames per heard audio segment (at ``sfreq``; speech), None without an audio span."""
        if self.audio_tmin is None or self.audio_tmax is None:
            return None
        return round((self.audio_tmax - self.audio_tmin) * self.sfreq)


@dataclass(frozen=True, kw_only=True)
class LmSpec(_Record):
    """Character language model shipped in the bundle (``lm``).

    Attributes
    ----------
    file : str
        LM file relative to the bundle folder (:mod:`bci_app.lm.format`).
    order : int | None
        n-gram order.
    weight : float | None
        LM weight of the beam search (the decoders' default when None).
    """

    file: str = field(metadata=_meta(_FILE, required=True))
    order: int | None = field(default=None, metadata=_meta(_COUNT))
    weight: float | None = field(default=None, metadata=_meta(_NONNEGATIVE))
    extra: JsonMap = field(default_factory=_empty)


@dataclass(frozen=True, kw_only=True)
class Decoding(_Record):
    """Decoding parameters (``decoding``); None: the decoder's default.

    Attributes
    ----------
    top_k : int | None
        Candidates reported per step (and kept per keystroke by the v1 beam).
    beam_width : int | None
        Beam width of the LM beam search.
    insertion_bonus : float | None
        CTC beam: bonus per emitted character.
    ctc_top_k : int | None
        CTC beam: characters considered per frame.
    """

    top_k: int | None = field(default=None, metadata=_meta(_COUNT))
    beam_width: int | None = field(default=None, metadata=_meta(_COUNT))
    insertion_bonus: float | None = field(default=None, metadata=_meta(_NUMBER))
    ctc_top_k: int | None = field(default=None, metadata=_meta(_COUNT))
    extra: JsonMap = field(default_factory=_empty)


@dataclass(frozen=True, kw_only=True)
class Subject(_Record):
    """Subject heads of the model (``subject``).

    Attributes
    ----------
    n_subjects : int
        Subject-specific layers in the graphs.
    default : int
        Head used live, ``0 <= default < n_subjects``.
    labels : tuple of str | None
        Subject label of each head.
    """

    n_subjects: int = field(metadata=_meta(_COUNT, required=True))
    default: int = field(metadata=_meta(_INDEX, required=True))
    labels: tuple[str, ...] | None = field(default=None, metadata=_meta(_STRS))
    extra: JsonMap = field(default_factory=_empty)

    def _check(self, at: _At) -> None:
        if self.default >= self.n_subjects:
            (at / "default").fail(f"must be < n_subjects ({self.n_subjects}), got {self.default}")
        if self.labels is not None and len(self.labels) != self.n_subjects:
            (at / "labels").fail(f"has {len(self.labels)} labels for {self.n_subjects} subjects")


@dataclass(frozen=True, kw_only=True)
class Ctc(_Record):
    """CTC output of ``brain2qwerty_v2`` bundles (``ctc``).

    Attributes
    ----------
    blank : int
        Class index of the CTC blank.
    frame_stride : int
        Input samples per output frame.
    frame_s : float
        Seconds per output frame.
    """

    blank: int = field(metadata=_meta(_INDEX, required=True))
    frame_stride: int = field(metadata=_meta(_COUNT, required=True))
    frame_s: float = field(metadata=_meta(_POSITIVE, required=True))
    extra: JsonMap = field(default_factory=_empty)


@dataclass(frozen=True, kw_only=True)
class Demo(_Record):
    """What the built-in demo plays for this bundle (``demo``).

    Attributes
    ----------
    simulator : mapping | None
        Simulator settings (``modality``, ``task``, and keyword arguments of the simulator).
    """

    simulator: JsonMap | None = field(default=None, metadata=_meta(_OBJECT))
    extra: JsonMap = field(default_factory=_empty)


@dataclass(frozen=True, kw_only=True)
class RecordingSource(_Record):
    """One training recording (``provenance.recordings[i]``).

    Attributes
    ----------
    name : str | None
        Recording name.
    file : str | None
        File name of a recorded session (informational: never opened).
    duration_s : float | None
        Duration in seconds.
    sha256 : str | None
        Checksum of the file.
    simulator : mapping | None
        Settings of a simulated session (``modality``, ``task``, ``subject``, ``snr``, ...).
    """

    name: str | None = field(default=None, metadata=_meta(_STR))
    file: str | None = field(default=None, metadata=_meta(_STR))
    duration_s: float | None = field(default=None, metadata=_meta(_NONNEGATIVE))
    sha256: str | None = field(default=None, metadata=_meta(_STR))
    simulator: JsonMap | None = field(default=None, metadata=_meta(_OBJECT))
    extra: JsonMap = field(default_factory=_empty)


@dataclass(frozen=True, kw_only=True)
class Provenance(_Record):
    """Where the decoder comes from (``provenance``).

    Attributes
    ----------
    recordings : tuple of RecordingSource | None
        Training recordings, in order.
    created : str | None
        ISO 8601 time of training.
    bci_app_version, torch_version, git_commit : str | None
        Versions of the training code.
    config : str | None
        Model configuration name (``"custom"`` for a hand-made one).
    seed : int | None
        Training seed.
    world_size : int | None
        Processes of a distributed training.
    """

    recordings: tuple[RecordingSource, ...] | None = field(
        default=None, metadata=_meta(_records_list(RecordingSource))
    )
    created: str | None = field(default=None, metadata=_meta(_STR))
    bci_app_version: str | None = field(default=None, metadata=_meta(_STR))
    torch_version: str | None = field(default=None, metadata=_meta(_STR))
    git_commit: str | None = field(default=None, metadata=_meta(_STR, keep_null=True))
    config: str | None = field(default=None, metadata=_meta(_STR))
    seed: int | None = field(default=None, metadata=_meta(_INT))
    world_size: int | None = field(default=None, metadata=_meta(_COUNT))
    extra: JsonMap = field(default_factory=_empty)

    @property
    def first_simulator(self) -> JsonMap | None:
        """Simulator settings of the first training recording, if it was simulated."""
        return self.recordings[0].simulator if self.recordings else None


@dataclass(frozen=True, kw_only=True)
class ExportCheck(_Record):
    """How closely a graph matches the trained model (``export.<role>``).

    Attributes
    ----------
    max_abs_diff : float
        Largest ``|onnxruntime - torch|`` on the export check inputs (an fp16 graph: largest
        ``|fp16 graph - fp32 graph|``).
    atol : float
        Bound it had to stay under.
    precision : "fp32" | "fp16" | None
        Precision of the graph's weights and arithmetic (its inputs and outputs are float32
        either way); None (older bundles) means fp32.
    """

    max_abs_diff: float = field(metadata=_meta(_NONNEGATIVE, required=True))
    atol: float = field(metadata=_meta(_NONNEGATIVE, required=True))
    precision: str | None = field(default=None, metadata=_meta(_PRECISION))
    extra: JsonMap = field(default_factory=_empty)


_GRAPHS = _records_by_key(GraphEntry, "graph role to {'file', 'sha256'}")
_EXPORT = _records_by_key(ExportCheck, "graph role to {'max_abs_diff', 'atol'}")
_PREPROCESSING = _Codec(_preprocessing, _preprocessing_dump)


@dataclass(frozen=True, kw_only=True)
class Manifest(_Record):
    """A decoder bundle's manifest, typed and read-only (module docstring).

    Build it with :meth:`from_dict` (or :meth:`read`), which validates; write it with
    :meth:`to_dict`. ``source`` is the file it was read from (for messages only).
    """

    name: str = field(metadata=_meta(_NAME, required=True))
    task: str = field(metadata=_meta(_NAME, required=True))
    stream: Stream = field(metadata=_meta(_record(Stream), required=True))
    graphs: Mapping[str, GraphEntry] = field(metadata=_meta(_GRAPHS, required=True))
    format: str = field(default=FORMAT, metadata=_meta(_STR, required=True))
    format_version: int = field(default=FORMAT_VERSION, metadata=_meta(_COUNT, required=True))
    arch: str | None = field(default=None, metadata=_meta(_NAME))
    model_config: JsonMap | None = field(default=None, metadata=_meta(_OBJECT))
    preprocessing: PreprocessConfig | None = field(
        default=None, metadata=_meta(_PREPROCESSING, keep_json=True)
    )
    window: Window | None = field(default=None, metadata=_meta(_record(Window)))
    classes: tuple[str, ...] | None = field(default=None, metadata=_meta(_STRS))
    lm: LmSpec | None = field(default=None, metadata=_meta(_record(LmSpec)))
    decoding: Decoding | None = field(default=None, metadata=_meta(_record(Decoding)))
    subject: Subject | None = field(default=None, metadata=_meta(_record(Subject)))
    ctc: Ctc | None = field(default=None, metadata=_meta(_record(Ctc)))
    logit_scale: float | None = field(default=None, metadata=_meta(_POSITIVE))
    audio_features: JsonMap | None = field(default=None, metadata=_meta(_OBJECT))
    mel: JsonMap | None = field(default=None, metadata=_meta(_OBJECT))
    demo: Demo | None = field(default=None, metadata=_meta(_record(Demo)))
    provenance: Provenance | None = field(default=None, metadata=_meta(_record(Provenance)))
    metrics: JsonMap | None = field(default=None, metadata=_meta(_OBJECT))
    export: Mapping[str, ExportCheck] | None = field(default=None, metadata=_meta(_EXPORT))
    extra: JsonMap = field(default_factory=_empty)
    source: str | None = field(default=None, compare=False, repr=False)

    # -------------------------------------------------------------------------- reading
    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> Manifest:
        """Validate a parsed ``manifest.json`` and return it typed.

        Parameters
        ----------
        data : dict
            The JSON object.
        path : path-like | None
            The file it came from, named in error messages.

        Raises
        ------
        ManifestError
            (a ``ValueError``) naming the file, the key, the problem and the fix.
        """
        at = _At(str(path) if path is not None else "(not from a file)")
        if not isinstance(data, Mapping):
            at.fail(f"must be a JSON object, got {_show(data)}")
        if data.get("format") != FORMAT:
            at.fail(
                f"this file is not a bci-app decoder bundle manifest (format "
                f"{data.get('format')!r}, expected {FORMAT!r})",
                "Give the folder written by 'bci-app train' or 'bci-app export'.",
            )
        version = data.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            (at / "format_version").fail(f"must be an integer >= 1, got {_show(version)}")
        if version > FORMAT_VERSION:
            at.fail(
                f"the bundle has format version {version}; this bci-app reads up to "
                f"{FORMAT_VERSION}",
                "Upgrade bci-app.",
            )
        manifest = cls._parse(data, at)
        object.__setattr__(manifest, "source", at.source if path is not None else None)
        return manifest

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Read and validate a ``manifest.json`` file (no other file is opened)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ManifestError(
                f"Invalid bundle manifest {path}: the file is not valid JSON ({err}). {REEXPORT}"
            ) from None
        return cls.from_dict(data, path)

    def _check(self, at: _At) -> None:
        if self.ctc is not None and self.classes is not None:
            if self.ctc.blank > len(self.classes):
                (at / "ctc" / "blank").fail(
                    f"must be at most the number of classes ({len(self.classes)})"
                )

    # --------------------------------------------------------------- typed conveniences
    @property
    def n_channels(self) -> int:
        """Channels the decoder reads (``stream.channels``)."""
        return self.stream.channels.n_channels

    def files(self) -> tuple[str, ...]:
        """File names the manifest refers to (graphs, then the LM), relative to the bundle."""
        names = [entry.file for entry in self.graphs.values()]
        return (*names, self.lm.file) if self.lm is not None else tuple(names)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "Ctc",
    "Decoding",
    "Demo",
    "ExportCheck",
    "GraphEntry",
    "JsonMap",
    "LmSpec",
    "Manifest",
    "ManifestError",
    "Provenance",
    "RecordingSource",
    "Stream",
    "Subject",
    "Window",
    "freeze",
    "thaw",
]
