"""Run files: TOML documents read into the config dataclasses.

A value is checked against its field's annotation before the dataclass sees it, so that a wrong
type is reported with the key and the type expected (not as "'<' not supported between 'str'
and 'int'"); unknown keys are refused with the known ones listed.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from arctic_rts.config import (
    DEMO_CATALOG,
    MAP_SECTIONS,
    InventoryRunConfig,
    MapConfig,
    RegionConfig,
)
from arctic_rts.errors import ConfigError


def read_toml(path: Path) -> dict[str, Any]:
    """A run file's TOML document; an unreadable or malformed file is a one-line ConfigError."""
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read run file {path}: {err}") from err


def dataclass_from_table(cls: type, table: Mapping[str, Any], where: str) -> Any:
    """Build a config dataclass from a TOML table; lists become tuples, unknown keys are refused.

    Raises:
        ConfigError: An unknown key, a missing required key or an invalid value.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table of key = value pairs.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in [{where}]; known: {', '.join(sorted(names))}."
        )
    check_table_types(cls, table, where)
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})
    except TypeError as err:
        raise ConfigError(f"[{where}]: {err}") from err


def read_inventory_run(path: str | Path) -> InventoryRunConfig:
    """Read an inventory run file (TOML) into an :class:`InventoryRunConfig`.

    Top-level keys are the run's fields (``out``, ``years``, ``regions``, ``stac``, ``weights``,
    ``exports``...); ``regions`` is an array of ``{name, bbox}`` tables or a vector file's path.
    Relative paths (``out``, ``regions``, ``weights``, a local ``stac``, ``[load]
    asset_roots``) are relative to the run file's folder. See ``deploy/inventory.example.toml``.

    Raises:
        ConfigError: Unreadable file, unknown key or invalid value.
    """
    path = Path(path)
    doc = read_toml(path)
    base = path.resolve().parent

    def rel(value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} in {path} must be a path (a string), got {value!r}.")
        return str(base / Path(value).expanduser())

    sections = {
        name: dataclass_from_table(cls, doc.pop(name), name)
        for name, cls in MAP_SECTIONS.items()
        if name in doc
    }
    if "load" in sections:
        load = sections["load"]
        roots = tuple(rel(r, "asset_roots") for r in load.asset_roots)
        sections["load"] = dataclasses.replace(load, asset_roots=roots)
    run: dict[str, Any] = dict(doc)
    if "out" in run:
        run["out"] = rel(run["out"], "out")
    regions = run.pop("regions", None)
    if isinstance(regions, str):
        run["regions_file"] = rel(regions, "regions")
    elif isinstance(regions, list):
        run["regions"] = tuple(
            dataclass_from_table(RegionConfig, r, f"regions #{i + 1}")
            for i, r in enumerate(regions)
        )
    elif regions is not None:
        raise ConfigError(
            f"regions in {path} must be [[regions]] tables (name, bbox) or a vector file path."
        )
    weights = run.pop("weights", None)
    if weights is not None:
        listed = [weights] if isinstance(weights, str) else weights
        if not isinstance(listed, list):
            raise ConfigError(f"weights in {path} must be a path or a list of paths.")
        run["weights"] = tuple(rel(w, "weights") for w in listed)
    stac = run.get("stac")
    if (
        isinstance(stac, str)
        and stac != DEMO_CATALOG
        and not stac.startswith(("http://", "https://"))
    ):
        run["stac"] = rel(stac, "stac")
    for key in ("out", "years"):
        if key not in run:
            raise ConfigError(f"{path} has no '{key}'; see deploy/inventory.example.toml.")
    allow_demo = run.pop("allow_demo_model", False)
    if not isinstance(allow_demo, bool):
        raise ConfigError(f"allow_demo_model in {path} must be true or false, got {allow_demo!r}.")
    run["map"] = MapConfig(**sections, allow_demo_model=allow_demo)
    return dataclass_from_table(InventoryRunConfig, run, "top level")  # type: ignore[no-any-return]


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURAL = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def check_table_types(cls: type, table: Mapping[str, Any], where: str) -> None:
    """Refuse the first value of ``table`` whose type does not fit its field of ``cls``.

    Annotations this module cannot judge (nested generics, custom classes) pass unchecked.

    Raises:
        ConfigError: ``key in [where] must be <expected>, got <value>.``
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in table and f.name in hints and not _fits(table[f.name], hints[f.name]):
            value = repr(table[f.name])
            value = value if len(value) <= 60 else value[:57] + "..."
            raise ConfigError(
                f"{f.name} in [{where}] must be {_describe(hints[f.name])}, got {value}."
            )


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, int | float)
    if hint in (bool, int, str):
        return isinstance(value, hint)
    if origin is Literal:
        return value in args
    if origin in (tuple, list, Sequence) or hint in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_fits, value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _NAMES:
        return _NAMES[hint]
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list, Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            kinds = {_PLURAL.get(a, "values") for a in args}
            return f"a list of {len(args)} {kinds.pop() if len(kinds) == 1 else 'values'}"
        return f"a list of {_PLURAL.get(args[0], 'values')}" if args else "a list"
    if origin in (dict, Mapping):
        return "a table"
    return getattr(hint, "__name__", str(hint))
