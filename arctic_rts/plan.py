"""Before the work: the scenes a run would use, the pixels it would process and the time that
may take (``--dry-run``); the area guard (``--max-area``, ``--yes``).

:func:`plan_map` and :func:`plan_inventory` search and select exactly as ``map`` and
``inventory run`` do, resolve the weights and check that the model fits the scenes, and measure
each scene's grid from its STAC metadata (the lazy array :func:`~arctic_rts.load.load_scenes`
builds, whose shape is the pixels the model will see). No pixel is read and no file is written.
The time estimate comes from one calibration: a forward pass of the chosen model on one tile
of random reflectance, on the device the run would use, on this machine
(:func:`~arctic_rts.predict.time_pixel`), times the pixels of every scene's model windows. It
is an estimate of the model's time only: reading imagery and vectorising come on top, and a
remote scheduler's workers (``--scheduler``) are not measured.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
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
    ("tiles", "tiles", "{}"),
    ("est. s", "est_seconds", "{:.0f}"),
    ("item", "item_id", "{}"),
)


def area_km2(geom: Any) -> float:
    """Geodesic area of a lon/lat (Multi)Polygon on the WGS84 ellipsoid, in km2."""
    from pyproj import Geod

    return abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0]) / 1e6


def check_area(geom: Any, limit_km2: float, what: str, action: str) -> float:
    """Refuse an area larger than ``limit_km2`` (``--max-area``) before any work.

    Returns:
        The area in km2.

    Raises:
        ConfigError: One line with the area, the limit and how to go on.
    """
    from arctic_rts.errors import ConfigError

    km2 = area_km2(geom)
    if km2 > limit_km2:
        raise ConfigError(
            f"{what} covers {km2:,.0f} km2, more than the limit of {limit_km2:,.0f} km2 "
            f"(--max-area); pass --yes to {action} anyway, or --dry-run first to see its "
            "scenes and an estimate of the time."
        )
    return km2


@dataclass(frozen=True)
class Calibration:
    """The measured speed behind a plan's time estimate."""

    #: Seconds per pixel of a model window (tile plus halo) on ``device``, on this machine.
    seconds_per_px: float
    #: The device of the measurement: "cpu", "cuda:0"...
    device: str
    #: Model tasks the run's local cluster runs at once at that speed: the GPUs it uses; 1 on
    #: CPU, where the measurement used every core the workers share.
    parallel: int
    #: Whether the run goes to a remote scheduler, whose workers were not measured.
    remote: bool = False

    def seconds(self, window_px: int) -> float:
        """Estimated model seconds for model windows of ``window_px`` pixels in all."""
        return window_px * self.seconds_per_px / self.parallel

    def describe(self) -> str:
        """One sentence saying what the estimate rests on."""
        where = "this machine, not the scheduler's workers" if self.remote else "this machine"
        over = f" over {self.parallel} GPUs" if self.parallel > 1 else ""
        return (
            f"{self.seconds_per_px * 1e6:.2f} s per Mpx of model windows (halos included), "
            f"measured on {where} ({self.device}){over}; "
            "reading imagery and vectorising come on top"
        )


def calibrate(weights: Any, config: MapConfig) -> Calibration:
    """Time one model window of ``weights`` as the run would run it (see the module doc)."""
    import dataclasses

    from arctic_rts.cluster import _gpus_visible
    from arctic_rts.predict import time_pixel

    predict = config.predict
    if config.cluster.gpu == "no" and predict.device == "auto":
        predict = dataclasses.replace(predict, device="cpu")
    seconds, device = time_pixel(weights, predict)
    parallel = 1
    if device.startswith("cuda") and predict.device == "auto" and not config.cluster.scheduler:
        gpus = _gpus_visible()
        parallel = max(1, min(config.cluster.n_workers or gpus, gpus))
    return Calibration(seconds, device, parallel, remote=bool(config.cluster.scheduler))


def _scene_rows(
    year: int,
    items: list[dict[str, Any]],
    weights: Any,
    config: MapConfig,
    area: Any = None,
    calibration: Calibration | None = None,
) -> list[dict[str, Any]]:
    """One row per selected item: tile, date, cloud, grid size, pixel and tile counts, the
    estimated model seconds (with ``calibration``, else None), footprint.

    With ``area`` (the run's bbox or regions), the grid is the part a clipped run maps.
    """
    from arctic_rts.load import load_scenes
    from arctic_rts.pipeline import check_model_fits, crop_to_area, scene_record
    from arctic_rts.predict import block_tiles, resolve_halo, window_pixels

    check_model_fits(weights, items, config)
    arrays = load_scenes(items, list(weights.bands), config.load)
    predict = resolve_halo(config.predict, weights)
    if area is not None:
        margin = (predict.halo or 0) * config.load.resolution
        arrays = [crop_to_area(a, area, margin + config.area_margin_m) for a in arrays]
    rows = []
    for item, arr in zip(items, arrays, strict=True):
        rec = scene_record(item)
        height, width = int(arr.sizes["y"]), int(arr.sizes["x"])
        tiles = int(block_tiles(height, width, predict).sum())
        window_px = window_pixels(height, width, predict)
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
                "tiles": tiles,
                "window_px": window_px,
                "est_seconds": calibration.seconds(window_px) if calibration else None,
                "item_id": rec.item_id,
                "footprint": item["geometry"],
            }
        )
    return rows


@dataclass
class Plan:
    """What a dry run found: one row per scene and the calibration of the time estimate."""

    #: One row per selected scene: ``year``, ``tile``, ``date``, ``cloud_cover``, ``size``
    #: (``WIDTHxHEIGHT`` pixels of the grid the run maps), ``width``, ``height``, ``pixels``,
    #: ``tiles`` (model windows), ``window_px`` (their pixels, halos included),
    #: ``est_seconds`` (estimated model time; None without an estimate), ``item_id`` and
    #: ``footprint`` (GeoJSON geometry).
    rows: list[dict[str, Any]]
    #: What the estimate rests on; None when no estimate was asked for.
    calibration: Calibration | None = None

    @property
    def pixels(self) -> int:
        return sum(r["pixels"] for r in self.rows)

    @property
    def seconds(self) -> float | None:
        """Estimated model seconds of the whole run (None without an estimate)."""
        if self.calibration is None:
            return None
        return self.calibration.seconds(sum(r["window_px"] for r in self.rows))


def plan_map(
    bbox: Sequence[float],
    year: int,
    *,
    stac: str | Path | None = None,
    weights: Any = None,
    config: MapConfig | None = None,
    clip: bool = True,
    estimate: bool = True,
) -> Plan:
    """The scenes :func:`~arctic_rts.pipeline.map_region` would map, without mapping them.

    ``clip`` as for ``map_region``: the pixels counted are those a clipped run maps.
    ``estimate``: time one model window here (:func:`calibrate`) for a time estimate.

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
    cal = calibrate(model, config) if estimate else None
    return Plan(_scene_rows(year, items, model, config, area, cal), cal)


def plan_inventory(
    cfg: InventoryRunConfig, *, estimate: bool = True, retry_failed: bool = False
) -> Plan:
    """The scenes :func:`~arctic_rts.inventory_run.run_inventory` would use, year by year.

    The same rows as :func:`plan_map`, for every year of ``cfg`` (a year without scenes has
    none). Finished scenes in the manifest of an earlier run are listed too: the plan does not
    open the work folder, except with ``retry_failed``: then it lists only the scenes that
    ``run_inventory(retry_failed=True)`` would compute, those its manifest records as failed
    (read, never written).
    """
    from arctic_rts.inventory_run import _area, _read_regions, _select_year, inventory_manifest
    from arctic_rts.manifest import scenes_to_compute
    from arctic_rts.model.domain import default_weights
    from arctic_rts.model.weights import resolve_weights

    regions = _read_regions(cfg)
    area = _area(regions) if cfg.clip_to_regions else None
    model = resolve_weights(list(cfg.weights) or default_weights(cfg.stac))
    manifest = inventory_manifest(cfg, regions, model, read_only=True)
    rows: list[dict[str, Any]] = []
    cal = None
    with stac_endpoint(cfg.stac) as url:
        for year in cfg.years:
            items, _, _ = _select_year(regions, year, url, cfg.map)
            if retry_failed:
                items, _ = scenes_to_compute(manifest, year, items, retry_failed=True)
            if items:
                if estimate and cal is None:
                    cal = calibrate(model, cfg.map)
                rows += _scene_rows(year, items, model, cfg.map, area, cal)
    return Plan(rows, cal)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(plan: Plan) -> str:
    """The plan as an aligned text table with a total line and the estimate's basis."""
    table = [[h for h, _, _ in _COLUMNS]]
    table += [
        ["-" if row[key] is None else fmt.format(row[key]) for _, key, fmt in _COLUMNS]
        for row in plan.rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    total = plan.pixels
    lines.append(
        f"{len(plan.rows)} scenes, {total:,} pixels ({total / 1e6:.1f} Mpx); "
        "nothing mapped or written (--dry-run)"
    )
    if plan.calibration is not None and plan.seconds is not None:
        lines.append(
            f"estimated model time: about {_duration(plan.seconds)} (an estimate: "
            f"{plan.calibration.describe()})"
        )
    return "\n".join(lines)


def plan_geojson(plan: Plan) -> str:
    """The plan as a GeoJSON FeatureCollection (scene footprints in EPSG:4326); the total
    pixels and the estimate (``seconds`` and what it rests on) as top-level members."""
    features = [
        {
            "type": "Feature",
            "geometry": row["footprint"],
            "properties": {k: v for k, v in row.items() if k != "footprint"},
        }
        for row in plan.rows
    ]
    cal = plan.calibration
    doc = {
        "type": "FeatureCollection",
        "features": features,
        "pixels": plan.pixels,
        "estimate": None
        if cal is None
        else {
            "seconds": plan.seconds,
            "seconds_per_px": cal.seconds_per_px,
            "device": cal.device,
            "parallel": cal.parallel,
            "basis": cal.describe(),
        },
    }
    return json.dumps(doc, default=str)
