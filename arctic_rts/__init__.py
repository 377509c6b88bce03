"""arctic-rts: map retrogressive thaw slumps across the Arctic from Sentinel-2.

The public API, one verb per stage (imported lazily, so ``import arctic_rts`` and the CLI's
``--help`` stay fast)::

    weights = resolve_weights("model.safetensors")  # the card, read once
    items = select_scenes(search_scenes(bbox, 2021, stac_url=url))
    scenes = load_scenes(items, weights.bands)  # lazy DataArrays, one per scene
    prob = predict(scenes[0], weights)
    polygons = vectorize(prob, threshold=weights.threshold)
    merged = merge_polygons([polygons])
    write_inventory("rts.gpkg", merged, year=2021, run={}, scenes=[])

or all of it at once with :func:`map_region`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_EXPORTS = {
    "map_region": "arctic_rts.pipeline",
    "run_inventory": "arctic_rts.inventory_run",
    "search_scenes": "arctic_rts.search",
    "select_scenes": "arctic_rts.search",
    "normalize_item": "arctic_rts.search",
    "serve_catalog": "arctic_rts.catalog",
    "load_scenes": "arctic_rts.load",
    "predict": "arctic_rts.predict",
    "connect": "arctic_rts.cluster",
    "vectorize": "arctic_rts.vectorize",
    "merge_polygons": "arctic_rts.merge",
    "write_inventory": "arctic_rts.inventory",
    "read_inventory": "arctic_rts.inventory",
    "match_objects": "arctic_rts.metrics",
    "ModelRef": "arctic_rts.model.weights",
    "Weights": "arctic_rts.model.weights",
    "resolve_weights": "arctic_rts.model.weights",
    "load_model": "arctic_rts.model.weights",
    "default_weights": "arctic_rts.model.domain",
    "save_weights": "arctic_rts.model.weights",
    "generate_demo": "arctic_rts.demo",
    "train": "arctic_rts.train",
    "build_dataset": "arctic_rts.train",
    "evaluate": "arctic_rts.train",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


class LazyExports(types.ModuleType):
    """A package whose lazy exports stay functions although submodules share their names.

    Python binds every submodule on its package once it is imported (``arctic_rts.predict`` the
    module replaces ``arctic_rts.predict`` the function), so ``rts.predict`` would return the
    function on first access and the module afterwards. The binding of a submodule whose name is
    an export is dropped here; the submodule stays reachable through ``sys.modules`` and
    ``from arctic_rts.predict import ...``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("_EXPORTS", {})
        if (
            name in exports
            and isinstance(value, types.ModuleType)
            and value.__name__ == f"{self.__name__}.{name}"
        ):
            return
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'arctic_rts' has no attribute {name!r}")


sys.modules[__name__].__class__ = LazyExports


def __dir__() -> list[str]:
    return __all__
