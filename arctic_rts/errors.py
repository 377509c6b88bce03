"""Exceptions and warnings of arctic-rts.

Every message says what went wrong and how to fix it; the CLI prints ``str(error)`` as one line
and exits non-zero, so messages must be complete sentences without tracebacks.
"""

from __future__ import annotations


class ArcticRTSError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class ConfigError(ArcticRTSError, ValueError):
    """A parameter or run file is invalid (bad bbox, year, month, path...)."""


class CatalogError(ArcticRTSError):
    """The STAC API could not be started, reached or searched."""


class NoScenesError(ArcticRTSError):
    """A search found no usable scene for the requested area and season."""


class LoadError(ArcticRTSError):
    """Imagery could not be read or does not carry the bands the model needs."""


class WeightsError(ArcticRTSError):
    """A weights file is missing, corrupt, not safetensors, or does not match the imagery."""


class InventoryError(ArcticRTSError):
    """The inventory GeoPackage cannot be written (exists, locked, wrong schema...)."""


class InventoryLockedError(InventoryError):
    """Another live process holds the inventory's write lock."""


class StorageError(InventoryError):
    """The output cannot be written: read-only folder, full disk, a file where a folder is."""


class IncompleteRunError(InventoryError):
    """Scenes failed, and writing what succeeded would replace a layer (or write an empty one)."""


class ClusterError(ArcticRTSError):
    """The Dask scheduler given cannot be reached."""


class DatasetError(ArcticRTSError):
    """A training or evaluation dataset cannot be built or read."""


class TrainingError(ArcticRTSError):
    """A training run cannot go on (the loss diverged, a checkpoint belongs to another run)."""


class ArcticRTSWarning(UserWarning):
    """Base class of the toolkit's warnings (skipped labels, dropped scenes, ...)."""


class SkippedInputWarning(ArcticRTSWarning):
    """Part of the input was skipped; the message says what and why."""
