"""evos-sdk: write evos plugins in Python.

An evos plugin is a WebAssembly component that exports one of the four
worlds of the `evos:plugin` WIT package. With this package a Python plugin
is one module (`app.py`) holding one class, named after its kind's export
interface, that subclasses the SDK's base class of that kind:

| kind          | class in app.py                                | method(s)           |
|---------------|------------------------------------------------|---------------------|
| agent         | `class AgentApi(evos_sdk.Agent)`               | `handle`            |
| connector     | `class ConnectorApi(evos_sdk.Connector)`       | `ingest`, `execute` |
| model-adapter | `class ModelAdapterApi(evos_sdk.ModelAdapter)` | `infer`             |
| policy        | `class PolicyApi(evos_sdk.Policy)`             | `evaluate`          |

Build it with the pinned componentize-py; `evos build` runs the manifest's
`[build]` command against the world of exactly what the manifest grants
(componentize-py imports every interface of the world it builds against):

    componentize-py -d {wit} -w {world} componentize app -p . -p {sdk}/python/src -o {out}

The bindings that command generates are the `wit_world` package this SDK
imports; their type stubs ship with it (`stubs/`) for mypy.

The host interfaces are the modules `log`, `config`, `kv` (agents and
connectors) and `models` (agents); each works only when the manifest grants
it. Payloads are JSON: `evos_sdk.json` parses them with errors the host can
show. `print()` and tracebacks reach the call's log.

Errors: raise `InvalidInput`, `Denied`, `NotFound`, `Upstream` or
`Internal` to answer with that error. Any other exception is answered as
`internal` with its type and message (the traceback goes to the log), and
a policy that raises denies: a broken policy fails closed.

Module top level runs once, when the component is built (componentize-py
snapshots the initialized interpreter): load weights and tables there, and
every call starts with them in memory.
"""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Any, Callable, List, TypeVar, cast

from componentize_py_types import Err

# `config`, `log`, `kv` and `models` are imported where used (`from
# evos_sdk import log`): a plugin's bindings hold only the host interfaces
# its manifest grants, so importing an ungranted one fails at build time.
from . import json
from .errors import Denied, Internal, InvalidInput, NotFound, PluginError, Upstream
from wit_world.imports import types as _types
from wit_world.imports.types import (
    Action,
    Decision,
    Event,
    ModelRequest,
    ModelResponse,
    Usage,
)

__all__ = [
    "Action",
    "Agent",
    "Allow",
    "Connector",
    "Decision",
    "Denied",
    "Deny",
    "Escalate",
    "Event",
    "Internal",
    "InvalidInput",
    "ModelAdapter",
    "ModelRequest",
    "ModelResponse",
    "NotFound",
    "PluginError",
    "Policy",
    "Upstream",
    "Usage",
    "action",
    "allow",
    "decision",
    "deny",
    "escalate",
    "event",
    "json",
    "response",
    "summary",
]

Allow = _types.Decision_Allow
Deny = _types.Decision_Deny
Escalate = _types.Decision_Escalate

F = TypeVar("F", bound=Callable[..., Any])


def allow() -> Decision:
    """The action may be carried out."""
    return Allow()


def deny(reason: str) -> Decision:
    """The action must not be carried out; `reason` is recorded."""
    return Deny(reason)


def escalate(reason: str) -> Decision:
    """A human decides; the action waits in the review queue."""
    return Escalate(reason)


def decision(verdict: str, reason: str = "") -> Decision:
    """A decision from a verdict (`allow`, `deny` or `escalate`) and its
    reason."""
    if verdict == "allow":
        return Allow()
    if verdict == "deny":
        return Deny(reason)
    if verdict == "escalate":
        return Escalate(reason)
    raise ValueError(f"unknown verdict {verdict!r}: use allow, deny or escalate")


def summary(decision: Decision) -> str:
    """One line for logs: `allow`, `deny: <reason>` or `escalate: <reason>`."""
    if isinstance(decision, Deny):
        return f"deny: {decision.value}"
    if isinstance(decision, Escalate):
        return f"escalate: {decision.value}"
    return "allow"


def event(id: str, kind: str, source: str, payload: Any) -> Event:
    """An event with `payload` serialized as its JSON body."""
    return Event(id=id, kind=kind, source=source, payload=json.dumps(payload), trace_id="")


def action(kind: str, event: Event, payload: Any, rationale: str) -> Action:
    """An action answering `event`, with `payload` serialized as JSON."""
    return Action(kind=kind, event_id=event.id, payload=json.dumps(payload), rationale=rationale)


def response(output: Any, model: str, input_units: int = 0, output_units: int = 0) -> ModelResponse:
    """A model adapter's answer: `output` serialized as JSON, the model's
    name and version (`fraud-lr@1.0.0`) and the units it used."""
    return ModelResponse(
        output=json.dumps(output),
        model=model,
        usage=Usage(input_units=input_units, output_units=output_units),
    )


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _answering_errors(method: F) -> F:
    """Wrap an export that answers `result<_, error>`: plugin errors become
    that error, any other exception `internal` with its traceback logged."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Err:
            raise
        except PluginError as e:
            raise Err(e.to_wit()) from None
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            raise Err(_types.Error_Internal(f"{method.__name__} raised {_describe(e)}")) from None

    return cast(F, wrapper)


def _failing_closed(method: F) -> F:
    """Wrap a policy's `evaluate`: an exception, or an answer that is not a
    decision, denies with the reason (and the traceback in the log)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            decision = method(*args, **kwargs)
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            return Deny(f"policy failed: {_describe(e)}")
        if not isinstance(decision, (Allow, Deny, Escalate)):
            return Deny(
                f"policy failed: evaluate returned {type(decision).__name__}, not allow(), deny(...) or escalate(...)"
            )
        return decision

    return cast(F, wrapper)


class _Export:
    """Wraps the exported methods a subclass defines. (The generated
    bindings' export protocols are not bases: componentize-py generates
    only the plugin's own world, so the other kinds' do not exist in it.)"""

    _methods: tuple[str, ...] = ()
    _wrap: Callable[[Any], Any] = staticmethod(_answering_errors)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._methods:
            method = cls.__dict__.get(name)
            if callable(method):
                setattr(cls, name, cls._wrap(method))


class Agent(_Export):
    """An agent reacts to events by proposing actions."""

    _methods = ("handle",)

    def handle(self, event: Event) -> List[Action]:
        """Handle one event; return the actions to propose (possibly none)."""
        raise NotImplementedError


class Connector(_Export):
    """A connector turns outside data into events and carries approved
    actions out."""

    _methods = ("ingest", "execute")

    def ingest(self, raw: bytes, content_type: str) -> List[Event]:
        """Parse raw outside data into events; raise `InvalidInput` saying
        what is wrong with malformed data."""
        raise NotImplementedError

    def execute(self, action: Action) -> str:
        """Carry out an approved action; return a short receipt."""
        raise NotImplementedError


class ModelAdapter(_Export):
    """A model adapter answers inference requests and reports its usage."""

    _methods = ("infer",)

    def infer(self, request: ModelRequest) -> ModelResponse:
        raise NotImplementedError


class Policy(_Export):
    """A policy decides whether a proposed action may be carried out. It is
    a pure function of the action, the event and its `[config]`."""

    _methods = ("evaluate",)
    _wrap = staticmethod(_failing_closed)

    def evaluate(self, action: Action, event: Event) -> Decision:
        raise NotImplementedError
