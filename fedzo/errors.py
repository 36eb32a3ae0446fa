"""Project exceptions: user errors that the CLI prints as one clear message, no traceback."""

from __future__ import annotations


class FedzoError(Exception):
    """Base class for errors caused by user input or environment, reported without traceback."""


class ConfigError(FedzoError, ValueError):
    """A bad option value: names the option, the value and what is allowed."""


class ScenarioError(ConfigError):
    """A scenario file failed validation (all problems listed at once)."""


class ReplayMismatch(FedzoError):
    """An update log does not fit the model it is replayed on."""


class MemoryBudgetExceeded(FedzoError):
    """A client configuration does not fit its device memory budget."""


class AssetError(FedzoError):
    """An embedded asset is missing, corrupted or cannot be fetched."""


class FederationError(FedzoError):
    """The federation cannot proceed (nodes missing, handshake failed)."""


class WriteError(FedzoError):
    """A file could not be written (a full disk, an unwritable directory); names the file."""
