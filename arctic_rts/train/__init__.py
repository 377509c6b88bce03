"""The training side: datasets, augmentations, methods, the training loop and evaluation.

Public entry points (what ``arctic-rts dataset build``, ``train`` and ``evaluate`` call):
:func:`build_dataset`, :func:`train` with :func:`load_train_config`, :func:`evaluate` with
:func:`format_table`. Submodules are imported on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from arctic_rts import LazyExports

_EXPORTS = {
    "build_dataset": "arctic_rts.train.build",
    "FolderDataset": "arctic_rts.train.data",
    "PatchDataset": "arctic_rts.train.data",
    "read_labels": "arctic_rts.train.data",
    "train": "arctic_rts.train.loop",
    "load_train_config": "arctic_rts.train.loop",
    "evaluate": "arctic_rts.train.evaluate",
    "format_table": "arctic_rts.train.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'arctic_rts.train' has no attribute {name!r}")


# ``arctic_rts.train.evaluate`` is a submodule and an exported function: keep the function.
sys.modules[__name__].__class__ = LazyExports
