"""The one place objectives are registered: name, options, build, and the shared defaults they change.

The CLI's choices and option groups, `build`, `bench`, `compare`, the demo and the config's
objective options all read this registry, so adding an objective is its own module plus one
`register(...)` line in `unmasked/objectives/__init__.py`. What an objective can do (views, a
teacher, reconstructions, the shared crop) is said by its Objective class, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar

from unmasked.errors import UserError


class ObjectiveOptions:
    """Base of an objective's options dataclass (its fields are made with `options.opt`).

    `resolve` fills the fields left as None from the data and may choose shared options the user
    left open (e.g. MAE's crop on image folders); `validate` checks combinations (each value on
    its own is checked by the rule on its field); `resolve_device` fills what depends on the
    device. `LEGACY`: what runs saved before an option existed did, for config.json without it."""

    LEGACY: ClassVar[dict] = {}

    def resolve(self, cfg, small: bool) -> None:
        pass

    def resolve_device(self, cuda_or_distributed: bool) -> None:
        pass

    def validate(self, cfg) -> None:
        pass


@dataclass
class NoOptions(ObjectiveOptions):
    """For an objective without options of its own."""


@dataclass(frozen=True)
class ObjectiveEntry:
    """name: the --objective value; objective: its Objective class (capabilities are class
    attributes); options: its options dataclass (CLI flags in their own --help group, flat keys of
    config.json); build(cfg) -> Objective from the resolved PretrainConfig; defaults: shared options
    this objective sets differently, applied only where the user typed no value."""

    name: str
    objective: type
    options: type
    build: Callable[[Any], Any]
    defaults: dict = field(default_factory=dict)


_ENTRIES: dict[str, ObjectiveEntry] = {}


def register(entry: ObjectiveEntry) -> ObjectiveEntry:
    """Add (or replace, by name) an objective."""
    _ENTRIES[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove an objective (tests register a throw-away one)."""
    _ENTRIES.pop(name, None)


def get(name: str) -> ObjectiveEntry:
    try:
        return _ENTRIES[name]
    except KeyError:
        raise UserError(f"--objective {name}: unknown objective; choose one of {', '.join(names())}") from None


def names() -> tuple[str, ...]:
    return tuple(_ENTRIES)


def entries() -> tuple[ObjectiveEntry, ...]:
    return tuple(_ENTRIES.values())


def option_fields_of(entry: ObjectiveEntry) -> list[Field]:
    return list(fields(entry.options))


def option_fields() -> list[Field]:
    """Every registered objective's option fields, once each (options shared through a common
    base class, such as MAE's in LUT, appear once), in registration order."""
    seen: dict[str, Field] = {}
    for e in _ENTRIES.values():
        for f in option_fields_of(e):
            seen.setdefault(f.name, f)
    return list(seen.values())


def option_owners(name: str) -> list[str]:
    """The objectives that have option `name`."""
    return [e.name for e in _ENTRIES.values() if any(f.name == name for f in option_fields_of(e))]


def field_default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
