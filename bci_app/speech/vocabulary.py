"""The sentences a simulated listening session plays: a speech bundle's, a file's, or the bank's.

A speech decoder ranks a closed set of candidate words, so a listening session only tests it when
its sentences are the ones the candidates came from. A simulated bundle keeps them in its
manifest (``demo.simulator.sentences``, with the snr and subject it was made for);
:func:`listening_vocabulary` reads them, so ``bci-app simulate --task listening`` plays the
session the shipped ``speech-meg-small`` decodes unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.manifest import thaw
from bci_app.decoders.shipped import SPEECH_BUNDLE

#: ``--vocabulary`` value for the simulator's whole sentence bank (an open vocabulary).
BANK = "bank"


@dataclass(frozen=True)
class ListeningVocabulary:
    """What a simulated listening session plays.

    Attributes
    ----------
    sentences : list of str | None
        The heard sentences (None: the simulator's whole sentence bank).
    settings : dict
        Simulator settings of the session the vocabulary's bundle was made for (``snr``,
        ``subject``; empty for a file or the bank).
    label : str
        What the sentences are, for messages ("the vocabulary of speech-meg-small").
    """

    sentences: list[str] | None
    settings: dict[str, Any] = field(default_factory=dict)
    label: str = "the sentence bank"


def listening_vocabulary(source: str | Path | None = None) -> ListeningVocabulary:
    """Return the sentences (and session settings) of a listening vocabulary.

    Parameters
    ----------
    source : str | path | None
        A speech bundle folder (its ``demo.simulator`` sentences, snr and subject), a text file
        (one sentence per line), :data:`BANK` (the simulator's whole sentence bank), or None
        (the shipped speech bundle's vocabulary).

    Returns
    -------
    vocabulary : ListeningVocabulary

    Raises
    ------
    ValueError
        If ``source`` is none of these, or a bundle that holds no listening sentences.
    """
    if source is None:
        source = SPEECH_BUNDLE
    if str(source) == BANK:
        return ListeningVocabulary(None)
    path = Path(source)
    if path.is_file():
        lines = [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]
        sentences = [line for line in lines if line]
        if not sentences:
            raise ValueError(
                f"Invalid value for 'vocabulary': {str(path)!r} holds no sentence. Give a text "
                "file with one sentence per line."
            )
        return ListeningVocabulary(sentences, label=f"the {len(sentences)} sentences of {path}")
    if not path.is_dir():
        raise ValueError(
            f"Invalid value for 'vocabulary': {str(path)!r} is neither a speech bundle folder, a "
            f"text file (one sentence per line), nor {BANK!r} (the whole sentence bank). Give one "
            "of these."
        )
    bundle = load_bundle(path)
    demo = None if bundle.manifest.demo is None else bundle.manifest.demo.simulator
    if not isinstance(demo, Mapping) or not demo.get("sentences"):
        raise ValueError(
            f"Invalid value for 'vocabulary': the bundle '{bundle.name}' ({path}) does not say "
            "which sentences its candidates come from (no demo.simulator.sentences in its "
            "manifest). Give a text file with the sentences its listening sessions played."
        )
    settings = thaw(demo)
    sentences = [str(s) for s in settings.pop("sentences")]
    kept = {key: settings[key] for key in ("snr", "subject") if key in settings}
    return ListeningVocabulary(sentences, kept, f"the vocabulary of {bundle.name}")
