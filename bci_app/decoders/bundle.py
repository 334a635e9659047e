"""Decoder bundles: ONNX graphs plus a versioned manifest that says what they expect.

A bundle is a directory::

    my-decoder/
        manifest.json      # this module's schema (format "bci-app-bundle", version 1)
        encoder.onnx       # graphs named in manifest["graphs"], each with its sha256
        sentence.onnx
        lm.json            # optional: character LM shipped with the decoder
        candidates.npz     # speech bundles: the candidate set (+ candidates.json)

The manifest is self-describing: the stream it expects (rate, channel names/types/positions),
the preprocessing (parameters and fitted scaler statistics), the window, the classes, the language
model and decoding parameters, and the training provenance and metrics. :meth:`Bundle.check_stream`
compares it with a connected stream and fails with a message naming what does not match.
Nothing in a bundle is pickled: JSON and ONNX only.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acquisition.channels import ChannelSpec

FORMAT = "bci-app-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Candidate set of speech bundles (:mod:`bci_app.speech.decoder` writes and reads them).
CANDIDATE_FILES = ("candidates.npz", "candidates.json")


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fid:
        for block in iter(lambda: fid.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A loaded decoder bundle: its directory and manifest (graphs are opened by the runtime)."""

    path: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        """Human-readable decoder name."""
        return self.manifest.get("name", self.path.name)

    @property
    def task(self) -> str:
        """``"typing"`` or ``"speech"``."""
        return self.manifest["task"]

    @property
    def sfreq(self) -> float:
        """Sampling rate the decoder expects from the stream, in Hz."""
        return float(self.manifest["stream"]["sfreq"])

    @property
    def channels(self) -> ChannelSpec:
        """Channels the decoder reads, in the order it reads them."""
        return ChannelSpec.from_dict(self.manifest["stream"]["channels"])

    def graph_path(self, role: str) -> Path:
        """Path of the ONNX graph with this role (``"encoder"``, ``"sentence"``, ...)."""
        graphs = self.manifest["graphs"]
        if role not in graphs:
            raise KeyError(f"Bundle '{self.name}' has no '{role}' graph; it has {sorted(graphs)}.")
        return self.path / graphs[role]["file"]

    def file_path(self, relative: str) -> Path:
        """Path of a file shipped inside the bundle."""
        return self.path / relative

    def files(self) -> list[Path]:
        """Every file of the bundle: manifest, graphs, LM, candidate set (not training outputs)."""
        names = [MANIFEST, *(entry["file"] for entry in self.manifest["graphs"].values())]
        if self.manifest.get("lm"):
            names.append(self.manifest["lm"]["file"])
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


def save_bundle(
    path: str | Path, manifest: dict[str, Any], graphs: dict[str, str | Path]
) -> Bundle:
    """Write a bundle directory: copy each graph in and record its file name and sha256.

    ``manifest`` must hold ``name``, ``task``, ``stream`` (``sfreq``, ``channels``), and whatever
    else the decoder needs; ``graphs`` maps roles to ONNX files.
    """
    path = Path(path)
    for key in ("name", "task", "stream"):
        if key not in manifest:
            raise ValueError(f"Invalid bundle manifest: the key '{key}' is missing.")
    path.mkdir(parents=True, exist_ok=True)
    entries = {}
    for role, src in graphs.items():
        src = Path(src)
        dst = path / f"{role}.onnx"
        if src.resolve() != dst.resolve():
            dst.write_bytes(src.read_bytes())
        entries[role] = {"file": dst.name, "sha256": sha256_file(dst)}
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "graphs": entries}
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, sort_keys=True))
    tmp.replace(path / MANIFEST)
    return Bundle(path, full)


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Load and validate a bundle directory (manifest schema, graph files and their checksums)."""
    path = Path(path)
    manifest_path = path / MANIFEST if path.is_dir() else path
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"Not a decoder bundle: '{path}' has no {MANIFEST}. Give the directory written by "
            "'bci-app export' (or 'bci-app train')."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"Corrupt decoder bundle '{path}': {MANIFEST} is not valid JSON ({err})."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(
            f"Foreign file: '{manifest_path}' is not a bci-app decoder bundle manifest "
            f"(format {manifest.get('format') if isinstance(manifest, dict) else None!r})."
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"Decoder bundle '{path}' has format version {version!r}; this bci-app reads up to "
            f"{FORMAT_VERSION}. Upgrade bci-app."
        )
    for key in ("name", "task", "stream", "graphs"):
        if key not in manifest:
            raise ValueError(f"Corrupt decoder bundle '{path}': the manifest lacks '{key}'.")
    for role, entry in manifest["graphs"].items():
        graph = path / entry["file"]
        if not graph.is_file():
            raise FileNotFoundError(
                f"Corrupt decoder bundle '{path}': the '{role}' graph {entry['file']} is missing."
            )
        if verify and sha256_file(graph) != entry["sha256"]:
            raise ValueError(
                f"Corrupt decoder bundle '{path}': {entry['file']} does not match its checksum "
                "(the file was changed or truncated). Re-export the bundle."
            )
    return Bundle(path, manifest)


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
        shutil.copy2(path, dst / path.name)
    return load_bundle(dst)


def update_manifest(path: str | Path, changes: dict[str, Any]) -> Bundle:
    """Set top-level manifest keys of the bundle at ``path`` (graphs and their checksums kept)."""
    bundle = load_bundle(path)
    protected = {"format", "format_version", "graphs"} & set(changes)
    if protected:
        raise ValueError(
            f"Invalid manifest change: {sorted(protected)} are written by save_bundle; change the "
            "other keys only."
        )
    manifest = {**bundle.manifest, **changes}
    graphs = {role: bundle.path / entry["file"] for role, entry in manifest.pop("graphs").items()}
    for key in ("format", "format_version"):
        manifest.pop(key)
    return save_bundle(bundle.path, manifest, graphs)
