"""The typed data error: what went wrong, in one line, and whose fault it was.

A caller tells a malformed request (:class:`DataUsageError`: an unknown or
incomplete source string, an invalid argument) from a source that cannot be read
(:class:`DataRuntimeError`: missing, empty, unreadable or corrupt data) by the
class, or by :attr:`DataError.kind`, never by reading the message. The command
line maps the first to exit 2 and the second to exit 1.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["DataError", "DataRuntimeError", "DataUsageError"]


class DataError(Exception):
    """A problem with a data source, described in one user-facing line.

    Raise one of the two subclasses; a bare ``DataError`` counts as a runtime
    problem, the conservative reading (exit 1, not "you typed it wrong").
    """

    kind: ClassVar[str] = "runtime"

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DataUsageError(DataError):
    """The request is malformed: an unknown or incomplete source string, a bad argument."""

    kind: ClassVar[str] = "usage"


class DataRuntimeError(DataError):
    """The request is well formed but the data is missing, empty, unreadable or corrupt."""

    kind: ClassVar[str] = "runtime"
