"""Per-plugin key-value state (manifest: `kv = { ... }`). Agents and
connectors only: the other worlds do not import it.

Failures raise plugin errors: a broken quota is `Denied`, a bad key
`InvalidInput`, a store failure `Internal`."""

from __future__ import annotations

from typing import Any, List, NoReturn, Optional

from componentize_py_types import Err

from . import json
from .errors import Denied, Internal, InvalidInput
from wit_world.imports import kv as _kv


def _raise(e: Err[Any]) -> NoReturn:
    value = e.value
    if isinstance(value, _kv.KvError_QuotaExceeded):
        raise Denied(f"kv quota exceeded: {value.value}") from None
    if isinstance(value, _kv.KvError_InvalidKey):
        raise InvalidInput(f"invalid kv key: {value.value}") from None
    raise Internal(f"kv failure: {value.value}") from None


def get(key: str) -> Optional[bytes]:
    """The value stored under `key`, if any."""
    try:
        return _kv.get(key)
    except Err as e:
        _raise(e)


def set(key: str, value: bytes) -> None:
    """Store `value` under `key`, replacing any previous value."""
    try:
        _kv.set(key, value)
    except Err as e:
        _raise(e)


def delete(key: str) -> bool:
    """Remove `key`; returns whether it existed."""
    try:
        return _kv.delete(key)
    except Err as e:
        _raise(e)


def list_keys(prefix: str) -> List[str]:
    """Keys starting with `prefix`, in lexical order."""
    try:
        return _kv.list_keys(prefix)
    except Err as e:
        _raise(e)


def get_json(key: str) -> Any:
    """The value under `key` parsed as JSON, or None when absent."""
    raw = get(key)
    if raw is None:
        return None
    try:
        return json.parse(raw, f"kv value under {key!r}")
    except InvalidInput as e:
        raise Internal(e.message) from None


def set_json(key: str, value: Any) -> None:
    """Store `value` as JSON under `key`."""
    set(key, json.dumps(value).encode())
