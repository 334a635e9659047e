"""The base of every model configuration: frozen dataclass, type checks, presets, dict round trip.

Each architecture's config (:mod:`models.typing.config`, :class:`models.speech.SpeechClipConfig`)
is a ``@dataclass(frozen=True)`` inheriting :class:`ConfigMixin`, with its named presets
(``"paper"``, ``"small"``) in ``presets``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

_FIELD_TYPES = {"int": int, "float": float, "bool": bool}


class ConfigMixin:
    """Frozen-dataclass configs: field type checks, named presets and the dict/JSON round trip.

    Every model config is a ``@dataclass(frozen=True)`` that inherits this mixin and lists its
    presets in the ``presets`` class variable. Fields annotated ``int``, ``float`` or ``bool``
    are type-checked (an ``int`` given for a ``float`` is stored as a float); a subclass that
    checks more calls ``super().__post_init__()`` first.
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            kind = _FIELD_TYPES.get(field.type)
            if kind is None:
                continue
            value = getattr(self, field.name)
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, field.name, float(value))
                ok = True
            if not ok:
                raise ValueError(
                    f"Invalid value for '{field.name}': expected {field.type}, got {value!r} "
                    f"({type(value).__name__}). Give a {field.type}."
                )

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build a configuration from :meth:`to_dict` output; missing keys take the defaults.

        Raises
        ------
        ValueError
            If ``data`` has keys that are not fields of this configuration (e.g. a v2 config given
            to v1) or values of the wrong type.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"Invalid keys for {cls.__name__}: {unknown}. Known keys: {sorted(names)}. "
                "Was this configuration written for another model?"
            )
        return cls(**dict(data))

    @classmethod
    def named(cls, name: str) -> Self:
        """Return the preset ``name`` (``"paper"`` or ``"small"``)."""
        if name not in cls.presets:
            raise ValueError(
                f"Invalid value for 'config': unknown preset {name!r} for {cls.__name__}. "
                f"Use one of {sorted(cls.presets)}."
            )
        return cls(**cls.presets[name])
