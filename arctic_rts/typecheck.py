"""Type checks of TOML values against the config dataclasses' annotations, so that a wrong type
is reported with the key and the type expected, before the dataclass sees it (and fails with a
message like ``'<' not supported between 'str' and 'int'``)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

from arctic_rts.errors import ConfigError

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
