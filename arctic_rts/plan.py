"""Before the work: the scenes a run would use and the pixels it would process (``--dry-run``).

:func:`plan_map` and :func:`plan_inventory` search and select exactly as ``map`` and
``inventory run`` do, resolve the weights and check that the model fits the scenes, and measure
each scene's grid from its STAC metadata (the lazy array :func:`~arctic_rts.load.load_scenes`
builds, whose shape is the pixels the model will see). No pixel is read, nothing is computed,
and no file is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arctic_rts.catalog import stac_endpoint
from arctic_rts.config import (
    InventoryRunConfig,
    MapConfig,
    bbox_geometry,
    validate_bbox,
    validate_year,
)

#: Table columns of :func:`format_plan`: (heading, row key, format).
_COLUMNS = (
    ("year", "year", "{}"),
    ("tile", "tile", "{}"),
    ("date", "date", "{}"),
    ("cloud %", "cloud_cover", "{:.1f}"),
    ("size px", "size", "{}"),
    ("pixels", "pixels", "{:,}"),
    ("item", "item_id", "{}"),
)


def _scene_rows(
    year: int, items: list[dict[str, Any]], weights: Any, config: MapConfig, area: Any = None
) -> list[dict[str, Any]]:
    """One row per selected item: tile, date, cloud, grid size and pixel count, footprint.

    With ``area`` (the run's bbox or regions), the grid is the part a clipped run maps.
    """
    from arctic_rts.load import load_scenes
    from arctic_rts.pipeline import check_model_fits, crop_to_area, scene_record
    from arctic_rts.predict import resolve_halo

    check_model_fits(weights, items, config)
    arrays = load_scenes(items, list(weights.bands), config.load)
    if area is not None:
        margin = (resolve_halo(config.predict, weights).halo or 0) * config.load.resolution
        arrays = [crop_to_area(a, area, margin + config.area_margin_m) for a in arrays]
    rows = []
    for item, arr in zip(items, arrays, strict=True):
        rec = scene_record(item)
        height, width = int(arr.sizes["y"]), int(arr.sizes["x"])
        rows.append(
            {
                "year": year,
                "tile": rec.mgrs_tile,
                "date": rec.datetime[:10],
                "cloud_cover": rec.cloud_cover,
                "size": f"{width}x{height}",
                "width": width,
                "height": height,
                "pixels": width * height,
                "item_id": rec.item_id,
                "footprint": item["geometry"],
            }
        )
    return rows


def plan_map(
    bbox: Sequence[float],
    year: int,
    *,
    stac: str | Path | None = None,
    weights: Any = None,
    config: MapConfig | None = None,
    clip: bool = True,
) -> list[dict[str, Any]]:
    """The scenes :func:`~arctic_rts.pipeline.map_region` would map, without mapping them.

    ``clip`` as for ``map_region``: the pixels counted are those a clipped run maps.

    Returns:
        One row per selected scene: ``year``, ``tile``, ``date``, ``cloud_cover``, ``size``
        (``WIDTHxHEIGHT`` pixels of the scene's grid), ``width``, ``height``, ``pixels``,
        ``item_id`` and ``footprint`` (GeoJSON geometry).

    Raises:
        NoScenesError: The search finds nothing; ConfigError, CatalogError, WeightsError as
            for a real run.
    """
    from arctic_rts.asset_checks import asset_policy
    from arctic_rts.model.domain import default_weights
    from arctic_rts.model.weights import resolve_weights
    from arctic_rts.search import search_scenes, select_scenes

    config = config or MapConfig()
    bbox_t = validate_bbox(list(bbox))
    year = validate_year(year)
    model = resolve_weights(weights if weights is not None else default_weights(stac))
    with stac_endpoint(stac) as url:
        found = search_scenes(
            bbox_t, year, stac_url=url, config=config.search, network=config.network,
            assets=asset_policy(url, config.load),
        )  # fmt: skip
        items = select_scenes(found)
    area = bbox_geometry(bbox_t, densify=0.01) if clip else None
    return _scene_rows(year, items, model, config, area)


def plan_inventory(cfg: InventoryRunConfig) -> list[dict[str, Any]]:
    """The scenes :func:`~arctic_rts.inventory_run.run_inventory` would use, year by year.

    The same rows as :func:`plan_map`, for every year of ``cfg`` (a year without scenes has
    none). Finished scenes in the manifest of an earlier run are listed too: the plan does not
    open the work folder.
    """
    from arctic_rts.inventory_run import _area, _read_regions, _select_year
    from arctic_rts.model.domain import default_weights
    from arctic_rts.model.weights import resolve_weights

    regions = _read_regions(cfg)
    area = _area(regions) if cfg.clip_to_regions else None
    model = resolve_weights(list(cfg.weights) or default_weights(cfg.stac))
    rows: list[dict[str, Any]] = []
    with stac_endpoint(cfg.stac) as url:
        for year in cfg.years:
            items, _, _ = _select_year(regions, year, url, cfg.map)
            if items:
                rows += _scene_rows(year, items, model, cfg.map, area)
    return rows


def format_plan(rows: list[dict[str, Any]]) -> str:
    """The plan as an aligned text table with a total line."""
    table = [[h for h, _, _ in _COLUMNS]]
    table += [[fmt.format(row[key]) for _, key, fmt in _COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    total = sum(r["pixels"] for r in rows)
    lines.append(
        f"{len(rows)} scenes, {total:,} pixels ({total / 1e6:.1f} Mpx); "
        "nothing computed or written (--dry-run)"
    )
    return "\n".join(lines)


def plan_geojson(rows: list[dict[str, Any]]) -> str:
    """The plan as a GeoJSON FeatureCollection (scene footprints in EPSG:4326)."""
    features = [
        {
            "type": "Feature",
            "geometry": row["footprint"],
            "properties": {k: v for k, v in row.items() if k != "footprint"},
        }
        for row in rows
    ]
    doc = {
        "type": "FeatureCollection",
        "features": features,
        "pixels": sum(r["pixels"] for r in rows),
    }
    return json.dumps(doc, default=str)
