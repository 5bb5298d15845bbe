"""JSON payload helpers whose errors are the plugin errors the host reports.

Payloads (an event's, an action's, a model request's input) are JSON text.
"""

from __future__ import annotations

import json as _json
from typing import Any, Dict

from .errors import Internal, InvalidInput


def parse(text: str | bytes, what: str = "payload") -> Any:
    """Parse JSON text; malformed text raises `InvalidInput` naming the
    line, column and problem."""
    try:
        return _json.loads(text)
    except _json.JSONDecodeError as e:
        raise InvalidInput(f"{what}: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{what}: not UTF-8: {e}") from None


def parse_object(text: str | bytes, what: str = "payload") -> Dict[str, Any]:
    """Parse JSON text that must be an object."""
    value = parse(text, what)
    if not isinstance(value, dict):
        raise InvalidInput(f"{what}: expected a JSON object, found {type(value).__name__}")
    return value


def dumps(value: Any) -> str:
    """Serialize `value` as compact JSON; what JSON cannot hold raises
    `Internal` naming it."""
    try:
        return _json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise Internal(f"serialize: {e}") from None
