"""What a demo catalog is: its parameters, its manifest and the :class:`DemoCatalog` handle.

The manifest (``demo_manifest.json``) is written last, so its presence marks a catalog complete. A
catalog whose manifest records the same parameters and generator version is reused as is.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arctic_rts.config import validate_year
from arctic_rts.errors import ConfigError

#: Bumped whenever the generated scenes change; a catalog of another version is regenerated.
GENERATOR_VERSION = "1.0.2"
#: The seed of the demo's own scenes. Train demo weights on other seeds.
DEMO_SEED = 2021
#: Scene edge in 10 m pixels (a multiple of 6 so the 60 m bands tile it exactly).
DEFAULT_SIZE_PX = 1008

MANIFEST_NAME = "demo_manifest.json"


@dataclass(frozen=True)
class DemoCatalog:
    """A generated demo catalog on disk.

    Attributes:
        root: The catalog folder (owned by the generator: regenerating replaces it).
        item_paths: One STAC item JSON per scene, all in ``root / "items"``; asset hrefs are
            relative to the item file, so the folder can move.
        truth_path: GeoPackage (EPSG:4326) of the true slumps of every year, columns
            ``slump_id``, ``year``, ``area_m2`` (EPSG:6931), ``change`` (``initial``,
            ``stable``, ``grown`` or ``new``; a slump that vanished has no row that year),
            ``geometry``.
        dem_path: Float32 DEM COG in EPSG:4326 (Copernicus GLO-30-like spacing) over ``bbox``.
        bbox: ``(west, south, east, north)`` covering both tiles: the default map area.
        years: The years that have scenes and truth.
    """

    root: Path
    item_paths: list[Path]
    truth_path: Path
    dem_path: Path
    bbox: tuple[float, float, float, float]
    years: tuple[int, ...]
    seed: int = DEMO_SEED
    size_px: int = DEFAULT_SIZE_PX
    tiles: tuple[str, ...] = field(default=())

    @property
    def items_dir(self) -> Path:
        """The folder of item JSON files (what ``catalog.serve_catalog`` takes)."""
        return self.root / "items"


#: First year the generator simulates: acquisitions come from Sentinel-2A and 2B alike.
DEMO_FIRST_YEAR = 2017


def _check_params(seed: int, years: Sequence[int], size_px: int) -> dict[str, Any]:
    """Validate the parameters; returns them as the manifest records them."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    ys = tuple(validate_year(y) for y in years)
    if not ys:
        raise ConfigError("years must name at least one year, e.g. (2021,).")
    if any(b <= a for a, b in itertools.pairwise(ys)):
        raise ConfigError(f"years must be strictly increasing, got {list(ys)}.")
    if ys[0] < DEMO_FIRST_YEAR:
        # Beyond the general year rule: every demo acquisition date may fall on either
        # satellite, and Sentinel-2B has flown only since 2017.
        raise ConfigError(
            f"demo years start in {DEMO_FIRST_YEAR} (both Sentinel-2 satellites), got {list(ys)}."
        )
    if isinstance(size_px, bool) or not isinstance(size_px, int | np.integer):
        raise ConfigError(f"size_px must be an integer, got {size_px!r}.")
    if size_px < 120 or size_px > 3000 or size_px % 6:
        raise ConfigError(
            f"size_px must be a multiple of 6 between 120 and 3000 (60 m bands tile the scene "
            f"exactly), got {size_px}; the default is {DEFAULT_SIZE_PX}."
        )
    return {
        "seed": int(seed),
        "years": list(ys),
        "size_px": int(size_px),
        "generator_version": GENERATOR_VERSION,
    }


def _read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest in ``root``, or None when there is none or it cannot be read."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _catalog_from_manifest(root: Path, manifest: dict[str, Any]) -> DemoCatalog | None:
    """Build the catalog object, or None when a listed file is missing (then regenerate)."""
    try:
        files = [root / f for f in manifest["files"]]
        if not all(f.is_file() for f in files):
            return None
        params = manifest["params"]
        return DemoCatalog(
            root=root,
            item_paths=[root / p for p in manifest["items"]],
            truth_path=root / manifest["truth"],
            dem_path=root / manifest["dem"],
            bbox=tuple(manifest["bbox"]),  # type: ignore[arg-type]
            years=tuple(params["years"]),
            seed=params["seed"],
            size_px=params["size_px"],
            tiles=tuple(manifest["tiles"]),
        )
    except (KeyError, TypeError):
        return None
