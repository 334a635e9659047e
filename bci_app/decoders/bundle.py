"""Decoder bundles: ONNX graphs plus a versioned manifest that says what they expect.

A bundle is a directory::

    my-decoder/
        manifest.json      # schema: bci_app.decoders.manifest (format "bci-app-bundle", v1)
        encoder.onnx       # graphs named in manifest.graphs, each with its sha256
        sentence.onnx
        lm.npz             # optional: character LM shipped with the decoder (manifest.lm)
        candidates.npz     # speech bundles: the candidate set (+ candidates.json)

The manifest is self-describing: the stream it expects (rate, channel names/types/positions),
the preprocessing (parameters and fitted scaler statistics), the window, the classes, the language
model and decoding parameters, and the training provenance and metrics. Its schema is
:class:`~bci_app.decoders.manifest.Manifest`, typed and frozen, validated by :func:`load_bundle`
before any other file is opened; the graphs' checksums and brain input shape are checked next.
:meth:`Bundle.check_stream` compares it with a connected stream and fails with a message naming
what does not match. Nothing in a bundle is pickled: JSON and ONNX only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acquisition.channels import ChannelSpec
from bci_app.decoders.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    REEXPORT,
    Manifest,
    ManifestError,
)

#: Candidate set of speech bundles (:mod:`bci_app.speech.decoder` writes and reads them).
CANDIDATE_FILES = ("candidates.npz", "candidates.json")
#: Name of the brain-data input of bci-app's graphs: (batch, channels, times).
BRAIN_INPUT = "x"

__all__ = [
    "BRAIN_INPUT",
    "CANDIDATE_FILES",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "Bundle",
    "Manifest",
    "ManifestError",
    "copy_bundle",
    "load_bundle",
    "save_bundle",
    "sha256_file",
    "update_manifest",
]


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fid:
        for block in iter(lambda: fid.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A loaded decoder bundle: its directory and typed manifest (the runtime opens the graphs).

    A plain ``dict`` given as ``manifest`` is validated into a
    :class:`~bci_app.decoders.manifest.Manifest` (errors name ``path/manifest.json``).
    """

    path: Path
    manifest: Manifest = field(repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not isinstance(self.manifest, Manifest):
            self.manifest = Manifest.from_dict(self.manifest, self.path / MANIFEST)

    @property
    def name(self) -> str:
        """Human-readable decoder name."""
        return self.manifest.name

    @property
    def task(self) -> str:
        """``"typing"`` or ``"speech"``."""
        return self.manifest.task

    @property
    def sfreq(self) -> float:
        """Sampling rate the decoder expects from the stream, in Hz."""
        return float(self.manifest.stream.sfreq)

    @property
    def channels(self) -> ChannelSpec:
        """Channels the decoder reads, in the order it reads them (positions read-only)."""
        return self.manifest.stream.channels

    def require(self, key: str, purpose: str) -> Any:
        """Return the manifest section ``key``, or raise ValueError naming it and the fix.

        ``purpose`` says what needs it (``"typing decoding"``, ``"speech decoding"``).
        """
        value = getattr(self.manifest, key)
        if value is None:
            raise ValueError(
                f"Invalid bundle: '{self.name}' ({self.path}) has no '{key}' in its manifest, "
                f"which {purpose} needs. {REEXPORT}"
            )
        return value

    def graph_path(self, role: str) -> Path:
        """Path of the ONNX graph with this role (``"encoder"``, ``"sentence"``, ...)."""
        graphs = self.manifest.graphs
        if role not in graphs:
            raise KeyError(f"Bundle '{self.name}' has no '{role}' graph; it has {sorted(graphs)}.")
        return self.path / graphs[role].file

    def file_path(self, relative: str) -> Path:
        """Path of a file shipped inside the bundle."""
        return self.path / relative

    def files(self) -> list[Path]:
        """Every file of the bundle: manifest, graphs, LM, candidate set (not training outputs)."""
        names = [MANIFEST, *self.manifest.files()]
        names += [name for name in CANDIDATE_FILES if (self.path / name).is_file()]
        return [self.path / name for name in names]

    def check_stream(
        self, channels: ChannelSpec, sfreq: float, *, stream_name: str = "the stream"
    ) -> list[int]:
        """Check a stream against the bundle; return the stream indices of the decoder's channels.

        Raises
        ------
        ValueError
            When the rate differs, channels are missing, or channel types differ, naming both sides
            and the fix.
        """
        if not math.isclose(float(sfreq), self.sfreq, rel_tol=1e-6, abs_tol=1e-6):
            raise ValueError(
                f"Invalid value for 'sfreq': {stream_name} runs at {float(sfreq):g} Hz but the "
                f"decoder '{self.name}' expects {self.sfreq:g} Hz. Resample the stream or retrain "
                f"on {float(sfreq):g} Hz data."
            )
        want = self.channels
        index = {name: i for i, name in enumerate(channels.names)}
        missing = [n for n in want.names if n not in index]
        if missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise ValueError(
                f"Channel mismatch: the decoder '{self.name}' reads {want.n_channels} channels but "
                f"{len(missing)} of them are not in {stream_name} "
                f"({channels.n_channels} channels): "
                f"{shown}. Connect the montage the decoder was trained on, or retrain on this one."
            )
        picks = [index[n] for n in want.names]
        wrong = [
            f"{n} ({channels.types[i]} vs {t})"
            for n, t, i in zip(want.names, want.types, picks)
            if channels.types[i] != t and "misc" not in (t, channels.types[i])
        ]
        if wrong:
            raise ValueError(
                f"Channel type mismatch between {stream_name} and the decoder '{self.name}' "
                f"(stream vs decoder): {', '.join(wrong[:8])}. Check the montage or retrain."
            )
        return picks

    def check_graphs(self) -> None:
        """Check the graphs' tensors against the manifest (the graph files must exist).

        The tensor names a graph entry declares (``inputs``/``outputs``) must be the graph's. The
        brain input ``x`` (batch, channels, times) must read the manifest's channel count and,
        with a ``window``, its samples per window; dynamic dimensions pass. The graphs are opened
        with onnxruntime, unoptimised (a few ms each); skipped when it is not installed.

        Raises
        ------
        ValueError
            Naming the bundle, the graph, both shapes and the fix.
        """
        try:
            import onnxruntime as ort
        except ImportError:
            return
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        for role, entry in self.manifest.graphs.items():
            path = self.path / entry.file
            try:
                session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
            except Exception as err:  # onnxruntime raises its own exception types
                raise ValueError(
                    f"Corrupt decoder bundle '{self.path}': the '{role}' graph {entry.file} is not "
                    f"a readable ONNX model ({err}). {REEXPORT}"
                ) from None
            inputs = {i.name: tuple(i.shape) for i in session.get_inputs()}
            outputs = [o.name for o in session.get_outputs()]
            del session
            for kind, declared, actual in (
                ("inputs", entry.inputs, list(inputs)),
                ("outputs", entry.outputs, outputs),
            ):
                if declared is not None and sorted(declared) != sorted(actual):
                    raise ValueError(
                        f"Invalid decoder bundle '{self.path}': the manifest says the '{role}' "
                        f"graph {entry.file} has {kind} {sorted(declared)} but it has "
                        f"{sorted(actual)}. The manifest and the graph come from different models. "
                        f"{REEXPORT}"
                    )
            self._check_brain_input(role, entry.file, inputs.get(BRAIN_INPUT))

    def _check_brain_input(self, role: str, file: str, dims: tuple | None) -> None:
        if dims is None or len(dims) != 3:
            return
        shape = "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
        n_channels = self.channels.n_channels
        if isinstance(dims[1], int) and dims[1] != n_channels:
            raise ValueError(
                f"Invalid decoder bundle '{self.path}': its manifest lists {n_channels} channels "
                f"(stream.channels) but the '{role}' graph {file} reads {dims[1]} (input "
                f"'{BRAIN_INPUT}' of shape {shape}). The manifest and the graph come from "
                f"different models. {REEXPORT}"
            )
        window = self.manifest.window
        if window is not None and isinstance(dims[2], int) and dims[2] != window.n_times:
            raise ValueError(
                f"Invalid decoder bundle '{self.path}': its manifest window ({window.tmin:g} to "
                f"{window.tmax:g} s at {window.sfreq:g} Hz) has {window.n_times} samples but the "
                f"'{role}' graph {file} reads {dims[2]} (input '{BRAIN_INPUT}' of shape {shape}). "
                f"The manifest and the graph come from different models. {REEXPORT}"
            )


def _write_manifest(bundle: Bundle) -> None:
    """Write the bundle's manifest.json atomically (canonical JSON, sorted keys)."""
    tmp = bundle.path / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(bundle.manifest.to_dict(), indent=2, sort_keys=True))
    tmp.replace(bundle.path / MANIFEST)


def save_bundle(
    path: str | Path, manifest: Mapping[str, Any] | Manifest, graphs: Mapping[str, str | Path]
) -> Bundle:
    """Write a bundle directory: copy each graph in and record its file name and sha256.

    ``manifest`` (a dict, or a :class:`~bci_app.decoders.manifest.Manifest`) must hold
    ``name``, ``task``, ``stream`` (``sfreq``, ``channels``) and whatever else the decoder needs;
    ``format``, ``format_version`` and ``graphs`` are written here. ``graphs`` maps roles to ONNX
    files. The manifest is validated before anything is written and the graphs are checked
    against it (:meth:`Bundle.check_graphs`) before the manifest is.

    Raises
    ------
    ValueError
        An invalid manifest (:class:`~bci_app.decoders.manifest.ManifestError`), or graphs that
        do not fit it.
    """
    path = Path(path)
    body = dict(manifest.to_dict() if isinstance(manifest, Manifest) else manifest)
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, **body}
    Manifest.from_dict({**body, "graphs": {}}, path / MANIFEST)  # refuse before writing
    path.mkdir(parents=True, exist_ok=True)
    entries = {}
    for role, src in graphs.items():
        src = Path(src)
        dst = path / f"{role}.onnx"
        if src.resolve() != dst.resolve():
            dst.write_bytes(src.read_bytes())
        entries[role] = {"file": dst.name, "sha256": sha256_file(dst)}
    bundle = Bundle(path, Manifest.from_dict({**body, "graphs": entries}, path / MANIFEST))
    bundle.check_graphs()
    _write_manifest(bundle)
    return bundle


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Load and validate a bundle directory (or its manifest.json).

    The manifest is validated first (types, required keys, file names inside the folder), then
    each graph must exist, match its sha256 (``verify``) and fit the manifest
    (:meth:`Bundle.check_graphs`).

    Raises
    ------
    FileNotFoundError
        No manifest.json, or a graph file is missing.
    ValueError
        An invalid manifest (:class:`~bci_app.decoders.manifest.ManifestError`), a checksum
        mismatch, or graphs that do not fit the manifest; the message names the file and the fix.
    """
    path = Path(path)
    if path.is_file():
        manifest_path, path = path, path.parent
    else:
        manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"Not a decoder bundle: '{path}' has no {MANIFEST}. Give the directory written by "
            "'bci-app export' (or 'bci-app train')."
        )
    bundle = Bundle(path, Manifest.read(manifest_path))
    for role, entry in bundle.manifest.graphs.items():
        graph = path / entry.file
        if not graph.is_file():
            raise FileNotFoundError(
                f"Corrupt decoder bundle '{path}': the '{role}' graph {entry.file} is missing. "
                f"{REEXPORT}"
            )
        if verify and sha256_file(graph) != entry.sha256:
            raise ValueError(
                f"Corrupt decoder bundle '{path}': {entry.file} does not match its checksum "
                f"(the file was changed or truncated). {REEXPORT}"
            )
    bundle.check_graphs()
    return bundle


def copy_bundle(src: str | Path | Bundle, dst: str | Path) -> Bundle:
    """Copy a bundle's own files (:meth:`Bundle.files`) into ``dst``, replacing what is there.

    A training output folder holds the bundle beside checkpoints and a report; this copies the
    bundle alone (what ships, or what another machine needs).
    """
    bundle = src if isinstance(src, Bundle) else load_bundle(src)
    dst = Path(dst)
    if dst.resolve() == bundle.path.resolve():
        raise ValueError(f"Invalid value for 'dst': {dst} is the bundle itself; give another one.")
    if dst.exists() and any(dst.iterdir()):
        if not (dst / MANIFEST).is_file():
            raise ValueError(
                f"Invalid value for 'dst': {dst} holds files and is not a bundle; give an empty "
                "or new folder (an existing bundle there is replaced)."
            )
        shutil.rmtree(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for path in bundle.files():
        target = dst / path.relative_to(bundle.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return load_bundle(dst)


def update_manifest(path: str | Path, changes: Mapping[str, Any]) -> Bundle:
    """Set top-level manifest keys of the bundle at ``path`` (graphs and their checksums kept).

    The changed manifest is validated before it replaces the old one.
    """
    bundle = load_bundle(path)
    protected = {"format", "format_version", "graphs"} & set(changes)
    if protected:
        raise ValueError(
            f"Invalid manifest change: {sorted(protected)} are written by save_bundle; change the "
            "other keys only."
        )
    data = {**bundle.manifest.to_dict(), **changes}
    updated = Bundle(bundle.path, Manifest.from_dict(data, bundle.path / MANIFEST))
    _write_manifest(updated)
    return updated
