"""Logging into the host's log (manifest: `log = true`), tagged with the
plugin, its version and the trace. `print()` works too: stdout and stderr
reach the call's log as lines of their own."""

from __future__ import annotations

from wit_world.imports import log as _log


def trace(message: str) -> None:
    _log.write(_log.Level.TRACE, message)


def debug(message: str) -> None:
    _log.write(_log.Level.DEBUG, message)


def info(message: str) -> None:
    _log.write(_log.Level.INFO, message)


def warn(message: str) -> None:
    _log.write(_log.Level.WARN, message)


def error(message: str) -> None:
    _log.write(_log.Level.ERROR, message)
