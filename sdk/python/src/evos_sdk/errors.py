"""The errors a plugin raises, one per case of the contract's `error`.

Raise them anywhere in an agent, connector or model adapter: the SDK turns
them into the call's error answer (`invalid-input`, `denied`, ...), which
the host reports without treating the plugin as crashed.
"""

from __future__ import annotations

from wit_world.imports import types as _types


class PluginError(Exception):
    """Base of the errors a plugin answers with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wit(self) -> _types.Error:
        """The contract's `error` value for this error."""
        return _types.Error_Internal(self.message)


class InvalidInput(PluginError):
    """The input was malformed; the message says what is wrong."""

    def to_wit(self) -> _types.Error:
        return _types.Error_InvalidInput(self.message)


class Denied(PluginError):
    """The plugin was refused something (a quota, a grant)."""

    def to_wit(self) -> _types.Error:
        return _types.Error_Denied(self.message)


class NotFound(PluginError):
    """A named thing (model, key, endpoint) does not exist."""

    def to_wit(self) -> _types.Error:
        return _types.Error_NotFound(self.message)


class Upstream(PluginError):
    """A downstream system or another plugin failed."""

    def to_wit(self) -> _types.Error:
        return _types.Error_Upstream(self.message)


class Internal(PluginError):
    """Anything else."""


def from_wit(error: _types.Error) -> PluginError:
    """The exception for an `error` value the host returned."""
    if isinstance(error, _types.Error_InvalidInput):
        return InvalidInput(error.value)
    if isinstance(error, _types.Error_Denied):
        return Denied(error.value)
    if isinstance(error, _types.Error_NotFound):
        return NotFound(error.value)
    if isinstance(error, _types.Error_Upstream):
        return Upstream(error.value)
    return Internal(error.value)
