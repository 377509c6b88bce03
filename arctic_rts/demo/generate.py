"""``generate_demo``: write a catalog once, atomically, and reuse it afterwards.

The catalog is written to a temporary sibling folder and renamed into place under an exclusive
lock on the parent folder, so a crash never leaves half a catalog and two processes generating the
same catalog never swap a finished one away from its readers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from arctic_rts.demo.grid import (
    _acquisitions,
    _master_coords,
    _plan_tiles,
    _sample,
    _slope_aspect,
)
from arctic_rts.demo.items import _write_dem, _write_scene, _write_truth
from arctic_rts.demo.landscape import _build_landscape, _ground_weights
from arctic_rts.demo.manifest import (
    DEFAULT_SIZE_PX,
    DEMO_SEED,
    MANIFEST_NAME,
    DemoCatalog,
    _catalog_from_manifest,
    _check_params,
    _read_manifest,
)
from arctic_rts.demo.slumps import _slump_fields
from arctic_rts.errors import ConfigError


def generate_demo(
    root: Path | str,
    *,
    seed: int = DEMO_SEED,
    years: Sequence[int] = (2021,),
    size_px: int = DEFAULT_SIZE_PX,
) -> DemoCatalog:
    """Generate (or reuse) a synthetic Sentinel-2 L2A demo catalog in ``root``.

    If ``root`` already holds a complete catalog made with the same parameters and generator
    version, it is returned as is, without rewriting a file. Otherwise the catalog is written to
    a temporary sibling folder and renamed into place, so a crash never leaves half a catalog.

    Another ``seed`` gives independent scenes (terrain, slumps, look-alikes, clouds) over the
    same tiles and dates: use seeds other than :data:`DEMO_SEED` to train demo weights.

    Args:
        root: Folder for the catalog. It must be absent, empty or an earlier demo catalog.
        seed: Seed of every random choice; the same seed gives byte-identical rasters.
        years: Increasing years (2017 or later) with scenes; slumps grow, appear and vanish
            from one year to the next.
        size_px: Scene edge in 10 m pixels, a multiple of 6 from 120 (tests) to 3000.

    Returns:
        The catalog's paths, default bbox and years.

    Raises:
        ConfigError: Invalid parameters, or ``root`` holds files that are no demo catalog.
    """
    root = Path(root)
    params = _check_params(seed, years, size_px)
    existing = _read_manifest(root)
    if existing is not None and existing.get("params") == params:
        catalog = _catalog_from_manifest(root, existing)
        if catalog is not None:
            return catalog
    if root.exists() and any(root.iterdir()) and existing is None:
        raise ConfigError(
            f"{root} is not empty and holds no demo catalog ({MANIFEST_NAME} missing); "
            "pass an empty or new folder, or delete it."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        manifest = _write_catalog(tmp, params)
        with _folder_lock(root.parent):
            # Another process may have put the same catalog in place while this one wrote:
            # readers may already use it, so keep theirs and never swap it away.
            theirs = _read_manifest(root)
            if (
                theirs is not None
                and theirs.get("params") == params
                and _catalog_from_manifest(root, theirs) is not None
            ):
                manifest = theirs
            elif root.exists() and any(root.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                os.replace(root, old / "catalog")
                os.replace(tmp, root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, root)  # replaces an empty folder
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    catalog = _catalog_from_manifest(root, manifest)
    if catalog is None:  # pragma: no cover - only if the disk changed under us
        raise ConfigError(f"the demo catalog in {root} vanished while it was written; run again.")
    return catalog


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself (no lock file is left behind).

    It serialises the swap of finished catalogs between processes sharing one parent folder; the
    operating system releases it when the holder dies.
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _write_catalog(out: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Write a whole catalog into the empty folder ``out``; returns its manifest."""
    seed, years, size_px = params["seed"], params["years"], params["size_px"]
    ss = np.random.SeedSequence([seed, 0x52_54_53])  # "RTS"
    land_seed, plan_seed, scene_seed = ss.spawn(3)
    tiles = _plan_tiles(size_px)
    land = _build_landscape(np.random.default_rng(land_seed), tiles, len(years), size_px)
    acqs = _acquisitions(tiles, years, np.random.default_rng(plan_seed))
    scene_seeds = scene_seed.spawn(len(acqs))
    (out / "items").mkdir(parents=True)
    (out / "cogs").mkdir()
    files: list[str] = []
    items: list[str] = []
    yfields = [_slump_fields(land.slumps, land.grid, yi) for yi in range(len(years))]
    for tile in tiles:
        where = _master_coords(tile, land.grid)
        # Slope and aspect on the tile's own grid (its north differs from the master's).
        slope, aspect = _slope_aspect(_sample(land.fields["dem_s"], where), tile.grid.res)
        for yi, year in enumerate(years):
            wts, snow_depth = _ground_weights(land, yfields[yi], where)
            for ai, acq in enumerate(acqs):
                if acq.tile is not tile or acq.when.year != year:
                    continue
                rng = np.random.default_rng(scene_seeds[ai])
                item = _write_scene(out, acq, rng, wts, snow_depth, slope, aspect)
                items.append(f"items/{item['id']}.json")
                files.append(items[-1])
                files.extend(
                    f"cogs/{item['id']}/{Path(a['href']).name}" for a in item["assets"].values()
                )
    truth = _write_truth(out / "truth.gpkg", land, years)
    dem_rel, bbox = _write_dem(out, land, tiles)
    files += [truth, dem_rel]
    manifest = {
        "params": params,
        "items": sorted(items),
        "truth": truth,
        "dem": dem_rel,
        "bbox": list(bbox),
        "tiles": [t.name for t in tiles],
        "files": sorted(files),
        "synthetic": True,
        "note": "Synthetic Sentinel-2 L2A demo scenes generated by arctic_rts.demo.",
    }
    # The manifest is written last: its presence marks the catalog complete.
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return manifest
