"""The one place objectives are registered: name, builder, options and capabilities.

The CLI's choices and option groups, `build`, `bench`, `compare`, the demo and the config's
objective-specific fields all read this registry, so adding an objective is its own module plus
one `register(...)` line in `unmasked/objectives/__init__.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class ObjectiveEntry:
    """name: the --objective value; build(cfg) -> Objective from the resolved PretrainConfig;
    options: a dataclass whose fields (made with `config.opt`) become CLI flags in their own
    --help group and flat keys of PretrainConfig / config.json (names unique across objectives);
    views: augmented views per image; teacher: keeps an EMA teacher; reconstructs: has
    `reconstruct()` (reconstruction figures); resolve(cfg, small): fills this objective's
    data-dependent defaults; validate(cfg): raises UserError on bad values; cpu_demo: what
    `unmasked demo --objective NAME` changes in the shared CPU preset to fit its time budget;
    step_cost: a training image's time relative to MAE's (measured on the CPU demo model)."""

    name: str
    build: Callable[[Any], Any]
    options: type | None
    views: int
    teacher: bool
    reconstructs: bool
    description: str
    resolve: Callable[[Any, bool], None] | None = None
    validate: Callable[[Any], None] | None = None
    cpu_demo: dict = field(default_factory=dict)
    step_cost: float = 1.0  # a training image's cost relative to MAE's, for time estimates (study --dry-run)
    shared_crop: bool = True  # its views use --crop / --pad / --crop-scale-min (DINOv2 has its own multi-crop)


_ENTRIES: dict[str, ObjectiveEntry] = {}


def register(entry: ObjectiveEntry) -> ObjectiveEntry:
    """Add (or replace, by name) an objective; its option names must not clash with another's."""
    mine = {f.name: f for f in option_fields_of(entry)}
    for other in _ENTRIES.values():
        if other.name == entry.name:
            continue
        for f in option_fields_of(other):
            if f.name in mine and not _same_option(f, mine[f.name]):
                raise ValueError(f"objective {entry.name!r}: option {f.name!r} is already defined by "
                                 f"objective {other.name!r}; prefix it with the objective's name")
    from unmasked import config

    core = {f.name for f in config.CORE_FIELDS}
    if core & set(mine):
        raise ValueError(f"objective {entry.name!r}: options {sorted(core & set(mine))} clash with shared options")
    _ENTRIES[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove an objective (tests register a throw-away one)."""
    _ENTRIES.pop(name, None)


def get(name: str) -> ObjectiveEntry:
    from unmasked.errors import UserError

    try:
        return _ENTRIES[name]
    except KeyError:
        raise UserError(f"--objective {name}: unknown objective; choose one of {', '.join(names())}") from None


def names() -> tuple[str, ...]:
    return tuple(_ENTRIES)


def entries() -> tuple[ObjectiveEntry, ...]:
    return tuple(_ENTRIES.values())


def option_fields_of(entry: ObjectiveEntry) -> list[Field]:
    return list(fields(entry.options)) if entry.options is not None else []


def _same_option(a: Field, b: Field) -> bool:
    """One option shared by several objectives through a common options base class."""
    return a.default == b.default and dict(a.metadata) == dict(b.metadata)


def option_fields() -> list[Field]:
    """Every registered objective's option fields, once each, in registration order."""
    seen: dict[str, Field] = {}
    for e in _ENTRIES.values():
        for f in option_fields_of(e):
            seen.setdefault(f.name, f)
    return list(seen.values())


def option_owners(name: str) -> list[str]:
    """The objectives that have option `name`."""
    return [e.name for e in _ENTRIES.values() if any(f.name == name for f in option_fields_of(e))]


def option_defaults() -> dict[str, Any]:
    out = {}
    for f in option_fields():
        out[f.name] = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
    return out
