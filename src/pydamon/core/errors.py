"""Errors a user can act on that cross the layers: operations sets raise them, the CLI and the
modules turn them into one line and an exit code."""

from __future__ import annotations


class RealMemoryError(OSError):
    """An error of real-memory monitoring a user can act on (one-line message)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class FeatureMissing(RealMemoryError):
    """The kernel lacks a feature, or this process lacks a privilege, that is needed."""


class TargetGone(RealMemoryError):
    """A monitoring target process does not exist (any more)."""
