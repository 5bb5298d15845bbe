"""Configuration values granted by the manifest's `[config]` table."""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

from .errors import InvalidInput
from wit_world.imports import config as _config

T = TypeVar("T")


def get(key: str) -> Optional[str]:
    """The value of `key`, or None when the manifest does not set it."""
    return _config.get(key)


def require(key: str) -> str:
    """The value of `key`; a missing key raises `InvalidInput` naming it."""
    value = _config.get(key)
    if value is None:
        raise InvalidInput(f"config key {key!r} is not set; add it under [config] in the manifest")
    return value


def get_parsed(key: str, parse: Callable[[str], T]) -> T:
    """The value of `key` parsed with `parse` (e.g. `float`); a missing or
    unparsable value raises `InvalidInput` naming the key and the value."""
    raw = require(key)
    try:
        return parse(raw)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"config key {key!r} = {raw!r}: {e}") from None


def get_float(key: str) -> float:
    """The value of `key` as a finite number."""
    value = get_parsed(key, float)
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidInput(f"config key {key!r} = {value!r}: not a finite number")
    return value


def get_int(key: str) -> int:
    """The value of `key` as an integer."""
    return get_parsed(key, int)


def get_bool(key: str) -> bool:
    """The value of `key` as `true` or `false`."""
    raw = require(key)
    if raw in ("true", "false"):
        return raw == "true"
    raise InvalidInput(f"config key {key!r} = {raw!r}: expected true or false")
