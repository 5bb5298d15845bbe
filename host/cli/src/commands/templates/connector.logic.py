"""{{name}}: the records in a body, apart from the host: an object or an
array of objects, each with a string "id"."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple


def records(body: Any) -> List[Tuple[str, Dict[str, Any]]]:
    """Raises ValueError saying what is wrong with a body that is not."""
    if not isinstance(body, (list, dict)):
        raise ValueError("expected a JSON object or an array of objects")
    items = body if isinstance(body, list) else [body]
    out = []
    for i, item in enumerate(items):
        record_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(record_id, str) or not record_id:
            raise ValueError(f'record {i} has no string "id"')
        out.append((record_id, item))
    return out
