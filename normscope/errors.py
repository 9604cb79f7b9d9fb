"""The exceptions normscope raises.

Every error is a `NormscopeError` and also the builtin a caller would catch for the same
problem (safetensors' style), so `except ValueError` keeps working. Messages name the file
or tensor, what was expected, what was found, and what to do. This module imports nothing
else from the package.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "NormscopeError",
    "SourceNotFoundError",
    "CheckpointError",
    "UnknownNameError",
    "ConfigError",
    "MissingExtraError",
    "OutputError",
    "message",
]


def message(e: BaseException) -> str:
    """What an error says, as a user should read it (a KeyError's str() quotes its whole message)."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


class NormscopeError(Exception):
    """Base class of every error normscope raises on purpose."""


class SourceNotFoundError(NormscopeError, FileNotFoundError):
    """A model path, hub id or file that does not exist or cannot be reached."""


class CheckpointError(NormscopeError, ValueError):
    """A checkpoint file that is malformed, truncated, or inconsistent with itself."""


class UnknownNameError(NormscopeError, KeyError):
    """A name (scheme, architecture, rule, dtype, …) that is not registered.

    The message lists the valid names, unlike a bare KeyError.

    Example:
        >>> str(UnknownNameError("scheme", "Q9_K", ["Q4_K", "Q8_0"]))
        "unknown scheme 'Q9_K'; valid: Q4_K, Q8_0"
    """

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])

    def __reduce__(self) -> tuple:  # pickles back from a worker process with its fields
        return type(self), (self.kind, self.name, self.valid)


class ConfigError(NormscopeError, ValueError):
    """An option, configuration file or rule set that cannot be used as given."""


class MissingExtraError(NormscopeError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


class OutputError(NormscopeError, OSError):
    """An output location that normscope refuses to write (exists, inside the input, …)."""
