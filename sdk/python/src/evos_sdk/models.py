"""Run named model adapters through the host (manifest: `models = [...]`).
Agents only. The host routes each call to the adapter's current version,
meters it and audits it; an adapter's error raises the matching plugin
error."""

from __future__ import annotations

from typing import Any, Optional

from componentize_py_types import Err

from . import json
from .errors import from_wit
from wit_world.imports import models as _models
from wit_world.imports.types import ModelRequest, ModelResponse


def infer(model: str, request: ModelRequest) -> ModelResponse:
    """Run `model` on a request."""
    try:
        return _models.infer(model, request)
    except Err as e:
        raise from_wit(e.value) from None


def infer_json(model: str, input: Any, parameters: Optional[Any] = None) -> ModelResponse:
    """Run `model` with `input` (and `parameters`) serialized as JSON."""
    request = ModelRequest(
        input=json.dumps(input),
        parameters=json.dumps({} if parameters is None else parameters),
    )
    return infer(model, request)


def output(response: ModelResponse) -> Any:
    """A response's output, parsed."""
    return json.parse(response.output, "model output")
