"""The yearly inventory runner: every region, every year, into one GeoPackage; safe to rerun.

:func:`run_inventory` chains :func:`~arctic_rts.pipeline.map_scenes` over the scenes of each
year that a manifest of finished scenes (``<out>.work``) does not hold yet, merges the year from
the manifest, keeps the slumps inside the regions and writes the year's layer only when its
fingerprint changed; finally it refreshes the requested exports. A killed run loses at most the
scenes in flight, and a rerun with nothing new computes nothing and leaves every file as it was.
The weights are resolved once, into one :class:`~arctic_rts.model.weights.Weights`, for the
whole run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd

from arctic_rts import __version__
from arctic_rts.catalog import stac_endpoint
from arctic_rts.config import InventoryRunConfig, MapConfig
from arctic_rts.errors import ConfigError, InventoryError
from arctic_rts.files import new_folders_removed_on_failure, replace_durably, temporary_sibling
from arctic_rts.manifest import Manifest, SceneResults, check_work_dir, resume_scenes, scene_hash
from arctic_rts.pipeline import (
    SceneRecord,
    check_model_fits,
    keep_inside,
    map_scenes,
    scenes_frame,
)
from arctic_rts.run_report import InventoryRunResult, YearSummary, scene_row
from arctic_rts.runfile import read_inventory_run

if TYPE_CHECKING:  # torch stays out of the import of this module
    from arctic_rts.model.weights import Weights

logger = logging.getLogger(__name__)

#: Key of ``runs.info`` holding what a year layer was made from (see ``_year_fingerprint``).
FINGERPRINT_KEY = "inventory_fingerprint"


def _year_fingerprint(
    scene_hash: str,
    scenes: list[tuple[str, str, str]],
    config: MapConfig,
    clip: gpd.GeoDataFrame | None,
) -> str:
    """What a year layer is made from: per-scene inputs, merge parameters and the clip regions."""
    doc = {
        "scene_hash": scene_hash,
        "scenes": sorted(scenes),
        "inventory": dataclasses.asdict(config.inventory),
        "pixel_size": config.load.resolution,
        "clip": None
        if clip is None
        else [[str(n), g.wkb_hex] for n, g in zip(clip["name"], clip.geometry, strict=True)],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _read_regions(cfg: InventoryRunConfig) -> gpd.GeoDataFrame:
    """The run's regions as polygons in EPSG:4326 with a ``name`` column."""
    from arctic_rts.config import bbox_geometry

    if cfg.regions_file is None:
        # Densified so that the box keeps its shape when reprojected to the polar CRS; a box
        # across 180 degrees is two boxes that meet there (EPSG:3413 has no seam).
        geoms = [bbox_geometry(r.bbox, densify=0.01) for r in cfg.regions]
        return gpd.GeoDataFrame(
            {"name": [r.name for r in cfg.regions]}, geometry=geoms, crs="EPSG:4326"
        )
    try:
        frame = gpd.read_file(cfg.regions_file)
    except Exception as err:  # pyogrio's DataSourceError and OSError alike
        raise ConfigError(f"cannot read regions file {cfg.regions_file}: {err}") from err
    if cfg.name_column not in frame.columns:
        raise ConfigError(
            f"regions file {cfg.regions_file} has no column {cfg.name_column!r}; set "
            f"name_column to one of {[c for c in frame.columns if c != 'geometry']}."
        )
    if frame.crs is None:
        raise ConfigError(f"regions file {cfg.regions_file} declares no CRS; assign one.")
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if not len(frame) or not frame.geom_type.isin(["Polygon", "MultiPolygon"]).all():
        raise ConfigError(f"regions file {cfg.regions_file} must hold polygons (one per region).")
    return gpd.GeoDataFrame(
        {"name": frame[cfg.name_column].astype(str).to_numpy()},
        geometry=frame.geometry.to_crs("EPSG:4326").to_numpy(),
        crs="EPSG:4326",
    )


def _select_year(
    regions: gpd.GeoDataFrame, year: int, url: str, config: MapConfig
) -> tuple[list[dict[str, Any]], int, list[str]]:
    """Search and select each region's scenes; the union, deduplicated by item id.

    Returns the items (sorted by id), the number found before selection, and notes for regions
    without scenes.
    """
    from arctic_rts.asset_checks import asset_policy
    from arctic_rts.config import geometry_bbox
    from arctic_rts.errors import NoScenesError
    from arctic_rts.search import search_scenes, select_scenes

    chosen: dict[str, dict[str, Any]] = {}
    n_found, notes = 0, []
    for name, geom in zip(regions["name"], regions.geometry, strict=True):
        try:
            found = search_scenes(
                geometry_bbox(geom), year, stac_url=url, config=config.search,
                network=config.network, assets=asset_policy(url, config.load),
            )  # fmt: skip
        except NoScenesError as err:
            notes.append(f"region {name}: {err}")
            continue
        n_found += len(found)
        for item in select_scenes(found):
            chosen.setdefault(item["id"], item)
    return [chosen[k] for k in sorted(chosen)], n_found, notes


def _clip_to_regions(polygons: gpd.GeoDataFrame, regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Slumps whose representative point lies in a region (the map command's rule)."""
    return keep_inside(polygons, _area(regions))


def _area(regions: gpd.GeoDataFrame) -> Any:
    import shapely

    return shapely.union_all(regions.geometry.to_numpy())


def _export_if_changed(write: Callable[[Path], Path], target: Path) -> Path:
    """Write an export to a temporary file; replace ``target`` only when the bytes differ.

    A rerun with nothing new leaves the file untouched, while an export that a killed run left
    stale (the GeoPackage written, the export not yet) is refreshed.
    """
    tmp = temporary_sibling(target, target.suffix)
    try:
        write(tmp)
        if not target.exists() or target.read_bytes() != tmp.read_bytes():
            replace_durably(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass
class _InventoryRun:
    """What every year of one :func:`run_inventory` call shares."""

    cfg: InventoryRunConfig
    regions: gpd.GeoDataFrame
    weights: Weights
    manifest: Manifest
    url: str
    stac_label: str
    run_id: str
    cluster: Callable[[], Any]
    progress: bool
    #: Compute only the scenes an earlier run recorded as failed (``--retry-failed``).
    retry_failed: bool = False


def run_inventory(
    config: InventoryRunConfig | str | Path,
    *,
    progress: bool = True,
    client: Any = None,
    retry_failed: bool = False,
) -> InventoryRunResult:
    """Run a yearly inventory: every region, every year, into one GeoPackage; safe to rerun.

    For each year: search and select scenes per region (the union of the regions' scenes,
    deduplicated by item id); compute the scenes the manifest lacks (a scene's polygons and
    record are written to ``<out>.work`` as soon as it finishes, so a killed run loses at most
    the scenes in flight); merge all the year's scenes from the manifest, keep the slumps inside
    the regions (``clip_to_regions``), and write ``rts_<year>`` unless the GeoPackage already
    holds exactly this result (same fingerprint: scenes, their polygons' hashes, merge
    parameters, regions). Writing a year also writes ``changes_<year-1>_<year>`` (and refreshes
    ``changes_<year>_<year+1>``) when the neighbouring year is present. Scenes that fail are
    recorded in the ``scenes`` table and retried by the next run; their year is written with
    what succeeded. Finally the requested exports and the quick-look PNG beside ``out``
    (:func:`~arctic_rts.gis.write_quicklook`) are refreshed when their content changed.
    With ``retry_failed``, only the scenes that the manifest records as failed are computed
    (every finished scene is reused, and a scene no run has finished is not computed: it
    counts as failed, with the reason).

    The GeoPackage's lock is held for the whole run, so two runs on one file cannot interleave.
    A rerun with nothing new computes nothing and leaves every file byte-identical.

    Args:
        config: The run, or the path of its TOML file (see :func:`read_inventory_run`).
        progress: Show progress bars.
        client: An existing ``distributed.Client``; None connects as ``config.map.cluster``
            says, and only when some scene needs computing.
        retry_failed: Compute only the scenes that failed in earlier runs (see above).

    Returns:
        One :class:`YearSummary` per year, the exports written, the run id.

    Raises:
        ConfigError: Bad run file, region file or year.
        InventoryError: ``out`` holds a year that another command wrote (set ``overwrite``).
        InventoryLockedError: Another process is writing ``out``.
        CatalogError, WeightsError: The STAC API or the weights cannot be used.
    """
    from arctic_rts.cluster import connect
    from arctic_rts.gis import quicklook_path, write_quicklook
    from arctic_rts.inventory import change_counts, lock_inventory
    from arctic_rts.model.domain import default_weights
    from arctic_rts.model.weights import resolve_weights

    cfg = config if isinstance(config, InventoryRunConfig) else read_inventory_run(config)
    out = Path(cfg.out)
    check_work_dir(inventory_work_dir(out))
    # A run that fails before it writes anything leaves no empty folder behind.
    with new_folders_removed_on_failure(out.parent, inventory_work_dir(out)):
        out.parent.mkdir(parents=True, exist_ok=True)
        regions = _read_regions(cfg)
        weights = resolve_weights(list(cfg.weights) or default_weights(cfg.stac))
        work = inventory_work_dir(out)
        result = InventoryRunResult(out, work, uuid.uuid4().hex[:12], [])
        result.retry_failed = retry_failed

        with contextlib.ExitStack() as stack:
            stack.enter_context(lock_inventory(out))
            url = stack.enter_context(stac_endpoint(cfg.stac))

            def cluster() -> Any:
                nonlocal client
                if client is None:  # connected on first need: a rerun with nothing new needs none
                    client = stack.enter_context(connect(cfg.map.cluster))
                return client

            run = _InventoryRun(
                cfg=cfg,
                regions=regions,
                weights=weights,
                manifest=inventory_manifest(cfg, regions, weights),
                url=url,
                stac_label=url if cfg.stac is None or cfg.stac.startswith("http") else cfg.stac,
                run_id=result.run_id,
                cluster=cluster,
                progress=progress,
                retry_failed=retry_failed,
            )
            logger.info("inventory run %s: years %s into %s", result.run_id, list(cfg.years), out)
            for year in cfg.years:
                t0 = time.perf_counter()
                result.years.append(_inventory_year(run, year))
                result.years[-1].seconds = round(time.perf_counter() - t0, 3)
                logger.info(_year_line(result.years[-1]))
            for summary in result.years:
                summary.changes = change_counts(out, summary.year)
            result.exports = _refresh_exports(out, cfg.exports, regions)
            if out.exists():  # the picture follows the file: rewritten only when it changes
                _export_if_changed(lambda p: write_quicklook(out, p), quicklook_path(out))
        return result


def inventory_work_dir(out: Path) -> Path:
    """The work folder an inventory run keeps beside its GeoPackage, across runs:
    ``<out>.work`` (its manifest of finished and failed scenes)."""
    return out.with_name(out.name + ".work")


def inventory_manifest(
    cfg: InventoryRunConfig, regions: gpd.GeoDataFrame, weights: Weights, read_only: bool = False
) -> Manifest:
    """The manifest of ``cfg``'s work folder for this model and these regions
    (``read_only``: records looked up only, nothing made or tidied; a dry run's)."""
    area = _area(regions) if cfg.clip_to_regions else None
    return Manifest(
        inventory_work_dir(Path(cfg.out)),
        scene_hash(cfg.map, weights),
        area=area,
        margin_m=cfg.map.area_margin_m,
        read_only=read_only,
    )


@dataclass
class _Year:
    """One year of a run as it is put together: its scenes and what each one yielded."""

    year: int
    #: The selected items, sorted by id.
    items: list[dict[str, Any]]
    #: Items found before selection, over all regions.
    n_found: int
    #: When the year's work began (ISO time) and its ``perf_counter``.
    started: str
    t0: float
    #: Per selected scene, in ``items`` order: its record, the run that computed it, its
    #: polygons (see :class:`~arctic_rts.manifest.SceneResults`).
    scenes: SceneResults = field(default_factory=SceneResults)


def _inventory_year(run: _InventoryRun, year: int) -> YearSummary:
    """One year of an inventory run: select, compute what is missing, merge, write if changed."""
    from arctic_rts.merge import merge_polygons

    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    mcfg = run.cfg.map
    summary = YearSummary(year)
    items, n_found, summary.notes = _select_year(run.regions, year, run.url, mcfg)
    summary.n_scenes = len(items)
    if not items:
        summary.notes.append(f"no scenes for {year} in any region; year not written.")
        return summary
    check_model_fits(run.weights, items, mcfg)
    state = _Year(year, items, n_found, started, t0)
    _compute_missing(run, state, summary)
    merged = merge_polygons(
        state.scenes.frames,
        crs=mcfg.inventory.crs,
        min_overlap=mcfg.inventory.min_overlap,
        drop_cut=mcfg.inventory.drop_cut,
    )
    clip = run.regions if run.cfg.clip_to_regions else None
    if clip is not None:
        merged = _clip_to_regions(merged, clip)
    summary.n_polygons = len(merged)
    if not state.scenes.frames:
        summary.notes.append(f"every scene of {year} failed; year not written.")
        return summary
    _write_year(run, state, merged, clip, summary)
    return summary


def _compute_missing(run: _InventoryRun, state: _Year, summary: YearSummary) -> None:
    """Compute the year's scenes that the manifest lacks (each saved to it as it finishes),
    then read every scene of the year back from the manifest into ``state``.

    Computed now or earlier, every scene comes from the manifest, so that a resumed run merges
    exactly what an uninterrupted one does.
    """

    def compute(todo: list[dict[str, Any]], save: Any) -> list[SceneRecord]:
        def on_done(rec: SceneRecord, gdf: gpd.GeoDataFrame | None) -> None:
            save(rec, gdf)
            _log_scene(state.year, rec)

        area = _area(run.regions) if run.cfg.clip_to_regions else None
        records, _ = map_scenes(
            todo, run.weights, run.cfg.map, run.cluster(), run_id=run.run_id,
            on_done=on_done, progress=run.progress, area=area,
        )  # fmt: skip
        return records

    state.scenes = scenes = resume_scenes(
        run.manifest,
        state.year,
        state.items,
        run_id=run.run_id,
        compute=compute,
        retry_failed=run.retry_failed,
    )
    summary.n_computed, summary.n_from_manifest = scenes.n_computed, scenes.n_reused
    summary.retried = scenes.retried
    summary.failed = scenes.failed
    summary.scenes = [
        scene_row(rec, rid, run.run_id)
        for rec, rid in zip(scenes.records, scenes.run_ids, strict=True)
    ]


def _log_scene(year: int, rec: SceneRecord) -> None:
    if rec.status == "failed":
        logger.warning(
            "%d: scene %s failed (%.1f s): %s", year, rec.item_id, rec.seconds, rec.error
        )
    else:
        logger.info(
            "%d: scene %s done, %d polygons, %.1f s", year, rec.item_id, rec.n_polygons, rec.seconds
        )


def _write_year(
    run: _InventoryRun,
    state: _Year,
    merged: gpd.GeoDataFrame,
    clip: gpd.GeoDataFrame | None,
    summary: YearSummary,
) -> None:
    """Write ``rts_<year>`` unless the GeoPackage already holds exactly this result.

    Raises:
        InventoryError: The year was written by another command and ``overwrite`` is off.
    """
    from arctic_rts.inventory import last_write_info, write_inventory

    mcfg, year = run.cfg.map, state.year
    out = Path(run.cfg.out)
    fingerprint = _year_fingerprint(run.manifest.scene_hash, state.scenes.parts, mcfg, clip)
    written = last_write_info(out, year)
    present = written is not None
    written_fp = (written or {}).get(FINGERPRINT_KEY)
    if present and written_fp == fingerprint:
        return
    if present and not written_fp and not run.cfg.overwrite:
        raise InventoryError(
            f"{out} already holds year {year} written by another command (no inventory run "
            "fingerprint); set overwrite = true in the run file to replace it, or choose "
            "another out."
        )
    scenes = scenes_frame(state.scenes.records)
    scenes["run_id"] = state.scenes.run_ids  # the run that computed each scene, not the one writing
    write_inventory(
        out,
        merged,
        year=year,
        run=_year_info(run, state, len(merged), len(summary.failed), fingerprint),
        scenes=scenes,
        overwrite=present,
        config=mcfg.inventory,
        pixel_size=mcfg.load.resolution,
    )
    summary.written = True


def _year_info(
    run: _InventoryRun, state: _Year, n_polygons: int, n_failed: int, fingerprint: str
) -> dict[str, Any]:
    """The ``runs`` row of a year layer: provenance, query, counts, fingerprint, timing."""
    mcfg = run.cfg.map
    regions = [
        [str(n), list(g.bounds)]
        for n, g in zip(run.regions["name"], run.regions.geometry, strict=True)
    ]
    return {
        "run_id": run.run_id,
        "started": state.started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "arctic_rts_version": __version__,
        "stac_url": run.stac_label,
        "query": json.dumps(
            {"regions": regions, "year": state.year, **dataclasses.asdict(mcfg.search)}
        ),
        "config": json.dumps(dataclasses.asdict(mcfg)),
        "weights": ",".join(f"{r.path}#{r.sha256}" for r in run.weights.references),
        "items_found": state.n_found,
        "items_used": ",".join(it["id"] for it in state.items),
        "scenes_failed": n_failed,
        "n_polygons": n_polygons,
        "work_dir": str(run.manifest.root),
        "scene_hash": run.manifest.scene_hash,
        FINGERPRINT_KEY: fingerprint,
        "seconds_total": round(time.perf_counter() - state.t0, 3),
    }


def _year_line(y: YearSummary) -> str:
    """The log line that ends a year: scenes by status, slumps, the layer, the time."""
    layer = f"rts_{y.year} " + ("written" if y.written else "unchanged")
    return (
        f"{y.year}: {y.n_scenes} scenes ({y.n_computed} computed, {y.n_from_manifest} reused, "
        f"{len(y.failed)} failed), {y.n_polygons} slumps, "
        f"{layer if y.n_scenes else 'nothing written'}, {y.seconds:.1f} s"
    )


def _refresh_exports(out: Path, exports: Sequence[str], regions: gpd.GeoDataFrame) -> list[Path]:
    """Write the requested exports beside ``out`` (only those whose content changed)."""
    from arctic_rts.exports import export_geoparquet, summary_csv

    done: list[Path] = []
    if not out.exists():
        return done
    if "geoparquet" in exports:
        done.append(
            _export_if_changed(lambda p: export_geoparquet(out, p), out.with_suffix(".parquet"))
        )
    if "summary_csv" in exports:
        done.append(
            _export_if_changed(
                lambda p: summary_csv(out, regions, p), out.with_name(f"{out.stem}_summary.csv")
            )
        )
    return done
