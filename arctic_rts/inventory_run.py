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
import functools
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd

from arctic_rts import __version__
from arctic_rts.catalog import stac_endpoint
from arctic_rts.config import InventoryRunConfig, MapConfig, read_inventory_run
from arctic_rts.errors import ConfigError, InventoryError
from arctic_rts.files import (
    atomic_path,
    atomic_write,
    replace_durably,
    safe_file_name,
    temporary_sibling,
)
from arctic_rts.pipeline import (
    SceneRecord,
    check_model_fits,
    keep_inside,
    map_scenes,
    scene_record,
    scenes_frame,
)
from arctic_rts.run_report import InventoryRunResult, YearSummary, scene_row

if TYPE_CHECKING:  # torch stays out of the import of this module
    from arctic_rts.model.weights import Weights

logger = logging.getLogger(__name__)

#: Layout version of an inventory run's work folder; records of another version are not reused.
MANIFEST_VERSION = 1
#: Key of ``runs.info`` holding what a year layer was made from (see ``_year_fingerprint``).
FINGERPRINT_KEY = "inventory_fingerprint"


#: The fields of a ``log.jsonl`` line; the first three identify the scene record it logs.
_LOG_KEYS = ("run_id", "item_id", "year", "status", "finished")


class _Manifest:
    """The work folder ``<out>.work``: one record per finished scene and year, reused on rerun.

    ``scenes/<year>/<id>.parquet`` holds a scene's polygons (``vectorize`` output, in the
    scene's CRS) and ``scenes/<year>/<id>.json`` its record; each is written to a temporary
    file and renamed, the JSON last, so a record exists only for a scene whose polygons are
    complete on disk. ``log.jsonl`` gets one line per scene computed, by any run (an audit of
    the work done; the tests count it). A record is reused only when its ``scene_hash`` (model
    and per-scene parameters) is this run's and its polygons file still has its sha256.
    """

    def __init__(self, root: Path, scene_hash: str) -> None:
        self.root = root
        self.scene_hash = scene_hash
        (root / "scenes").mkdir(parents=True, exist_ok=True)
        # Left by a run killed mid-save; the caller holds the inventory's lock, so no live
        # run is writing them.
        for stale in (root / "scenes").glob("*/.*.tmp-*"):
            stale.unlink(missing_ok=True)
        self._complete_log()

    def _path(self, year: int, item_id: str, suffix: str) -> Path:
        # Appended, not with_suffix: ids may hold dots (CDSE's "....SAFE").
        return self.root / "scenes" / str(year) / (safe_file_name(item_id) + suffix)

    def lookup(self, year: int, item: dict[str, Any]) -> dict[str, Any] | None:
        """The scene's finished record from an earlier run, or None when it must be computed."""
        item_id = str(item["id"])
        try:
            rec = json.loads(self._path(year, item_id, ".json").read_text())
            data = self._path(year, item_id, ".parquet").read_bytes()
        except (OSError, ValueError):
            return None
        ok = (
            rec.get("manifest_version") == MANIFEST_VERSION
            and rec.get("item_id") == item_id
            and rec.get("item_key") == _item_key(item)
            and rec.get("status") == "done"
            and rec.get("scene_hash") == self.scene_hash
            and rec.get("polygons_sha256") == hashlib.sha256(data).hexdigest()
        )
        return rec if ok else None

    def polygons(self, year: int, item_id: str) -> gpd.GeoDataFrame:
        """The polygons of a finished scene."""
        return gpd.read_parquet(self._path(year, item_id, ".parquet"))

    def save(
        self,
        year: int,
        items: dict[str, dict[str, Any]],
        rec: SceneRecord,
        gdf: gpd.GeoDataFrame | None,
        *,
        run_id: str,
    ) -> None:
        """Record a scene that finished (done or failed), atomically."""
        from shapely.geometry import mapping

        target = self._path(year, rec.item_id, ".json")
        target.parent.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in dataclasses.asdict(rec).items() if k != "footprint"}
        doc: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "item_id": rec.item_id,
            "item_key": _item_key(items[rec.item_id]),
            "year": year,
            "scene_hash": self.scene_hash,
            "run_id": run_id,
            "status": rec.status,
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "record": record,
            "footprint": mapping(rec.footprint) if rec.footprint is not None else None,
        }
        if gdf is not None:
            with atomic_path(self._path(year, rec.item_id, ".parquet")) as tmp:
                gdf.to_parquet(tmp, index=False)
                doc["polygons_sha256"] = hashlib.sha256(tmp.read_bytes()).hexdigest()
        atomic_write(target, lambda tmp: tmp.write_text(json.dumps(doc, indent=1, default=str)))
        self._append_log([doc])

    def _append_log(self, docs: list[dict[str, Any]]) -> None:
        log = self.root / "log.jsonl"
        torn = False
        if log.exists() and log.stat().st_size > 0:
            with log.open("rb") as end:  # its last byte only: the log grows with every scene
                end.seek(-1, os.SEEK_END)
                torn = end.read(1) != b"\n"
        with log.open("a") as f:
            if torn:  # a run killed inside its append left half a line: end it
                f.write("\n")
            for doc in docs:
                f.write(json.dumps({k: doc[k] for k in _LOG_KEYS}) + "\n")

    def _complete_log(self) -> None:
        """Log the records that a killed run wrote but did not log.

        A record is renamed into place before its log line is appended; a kill between the two
        leaves a finished scene that the audit does not show. Every run repairs that first.
        """
        log = self.root / "log.jsonl"
        logged: set[tuple[Any, ...]] = set()
        for line in log.read_text().splitlines() if log.exists() else []:
            try:
                entry = json.loads(line)
            except ValueError:  # the torn last line of a killed run
                continue
            logged.add(tuple(entry.get(k) for k in _LOG_KEYS[:3]))
        missing = []
        for path in sorted((self.root / "scenes").glob("*/*.json")):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if tuple(doc.get(k) for k in _LOG_KEYS[:3]) not in logged and all(
                k in doc for k in _LOG_KEYS
            ):
                missing.append(doc)
        if missing:
            self._append_log(missing)


def _item_key(item: dict[str, Any]) -> str:
    """What identifies an item's pixels beyond its id: a reprocessed scene is computed again.

    Asset hrefs are left out on purpose: signed URLs change on every search, and a local
    catalog may move.
    """
    props = item.get("properties", {})
    keys = ("datetime", "updated", "s2:processing_baseline")
    doc = {"id": item.get("id"), **{k: props.get(k) for k in keys}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _scene_hash(config: MapConfig, weights: Weights) -> str:
    """Hash of everything that decides a scene's polygons: model, loading, tiling, vectorising.

    Device and batch size are left out (they change speed, not output); so are the search
    (which scenes, not what a scene yields) and the merge (applied to the manifest's polygons).
    """
    from arctic_rts.predict import resolve_halo

    predict = dataclasses.asdict(resolve_halo(config.predict, weights))
    for key in ("device", "batch_size"):
        predict.pop(key)
    doc = {
        "load": dataclasses.asdict(config.load),
        "predict": predict,
        "vectorize": dataclasses.asdict(config.vectorize.for_model(*weights.postprocessing)),
        "bands": list(weights.bands),
        "weights": list(weights.sha256),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    from arctic_rts.config import geometry_bbox
    from arctic_rts.errors import NoScenesError
    from arctic_rts.search import search_scenes, select_scenes

    chosen: dict[str, dict[str, Any]] = {}
    n_found, notes = 0, []
    for name, geom in zip(regions["name"], regions.geometry, strict=True):
        try:
            found = search_scenes(
                geometry_bbox(geom), year, stac_url=url, config=config.search,
                network=config.network,
            )  # fmt: skip
        except NoScenesError as err:
            notes.append(f"region {name}: {err}")
            continue
        n_found += len(found)
        for item in select_scenes(found):
            chosen.setdefault(item["id"], item)
    return [chosen[k] for k in sorted(chosen)], n_found, notes


def _record_from_manifest(rec: dict[str, Any]) -> SceneRecord:
    from shapely.geometry import shape

    fields = dict(rec["record"])
    fp = rec.get("footprint")
    return SceneRecord(**fields, footprint=shape(fp) if fp else None)


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
    manifest: _Manifest
    url: str
    stac_label: str
    run_id: str
    cluster: Callable[[], Any]
    progress: bool


def run_inventory(
    config: InventoryRunConfig | str | Path,
    *,
    progress: bool = True,
    client: Any = None,
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
    what succeeded. Finally the requested exports are refreshed when their content changed.

    The GeoPackage's lock is held for the whole run, so two runs on one file cannot interleave.
    A rerun with nothing new computes nothing and leaves every file byte-identical.

    Args:
        config: The run, or the path of its TOML file (see :func:`read_inventory_run`).
        progress: Show progress bars.
        client: An existing ``distributed.Client``; None connects as ``config.map.cluster``
            says, and only when some scene needs computing.

    Returns:
        One :class:`YearSummary` per year, the exports written, the run id.

    Raises:
        ConfigError: Bad run file, region file or year.
        InventoryError: ``out`` holds a year that another command wrote (set ``overwrite``).
        InventoryLockedError: Another process is writing ``out``.
        CatalogError, WeightsError: The STAC API or the weights cannot be used.
    """
    from arctic_rts.cluster import connect
    from arctic_rts.inventory import change_counts, lock_inventory
    from arctic_rts.model.domain import default_weights
    from arctic_rts.model.weights import resolve_weights

    cfg = config if isinstance(config, InventoryRunConfig) else read_inventory_run(config)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    regions = _read_regions(cfg)
    weights = resolve_weights(list(cfg.weights) or default_weights(cfg.stac))
    scene_hash = _scene_hash(cfg.map, weights)
    result = InventoryRunResult(out, out.with_name(out.name + ".work"), uuid.uuid4().hex[:12], [])

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
            manifest=_Manifest(result.work_dir, scene_hash),
            url=url,
            stac_label=url if cfg.stac is None or cfg.stac.startswith("http") else cfg.stac,
            run_id=result.run_id,
            cluster=cluster,
            progress=progress,
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
    return result


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
    #: Per selected scene, in ``items`` order: its record, the run that computed it, and
    #: ``(item id, status, polygons sha256)`` for the fingerprint.
    records: list[SceneRecord] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    parts: list[tuple[str, str, str]] = field(default_factory=list)
    #: The polygons of each finished scene.
    frames: list[gpd.GeoDataFrame] = field(default_factory=list)


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
    fresh = _compute_missing(run, state, summary)
    _collect_year(run, state, fresh, summary)
    merged = merge_polygons(
        state.frames,
        crs=mcfg.inventory.crs,
        min_overlap=mcfg.inventory.min_overlap,
        drop_cut=mcfg.inventory.drop_cut,
    )
    clip = run.regions if run.cfg.clip_to_regions else None
    if clip is not None:
        merged = _clip_to_regions(merged, clip)
    summary.n_polygons = len(merged)
    if not state.frames:
        summary.notes.append(f"every scene of {year} failed; year not written.")
        return summary
    _write_year(run, state, merged, clip, summary)
    return summary


def _compute_missing(
    run: _InventoryRun, state: _Year, summary: YearSummary
) -> dict[str, SceneRecord]:
    """Compute the year's scenes that the manifest lacks (each saved to it as it finishes);
    their records by item id."""
    year, manifest = state.year, run.manifest
    todo = [it for it in state.items if manifest.lookup(year, it) is None]
    summary.n_computed = len(todo)
    summary.n_from_manifest = len(state.items) - len(todo)
    logger.debug(
        "%d: %d scenes to compute, %d from the manifest",
        year,
        len(todo),
        len(state.items) - len(todo),
    )
    if not todo:
        return {}
    save = functools.partial(manifest.save, year, {it["id"]: it for it in todo}, run_id=run.run_id)

    def on_done(rec: SceneRecord, gdf: gpd.GeoDataFrame | None) -> None:
        save(rec, gdf)
        if rec.status == "failed":
            logger.warning(
                "%d: scene %s failed (%.1f s): %s", year, rec.item_id, rec.seconds, rec.error
            )
        else:
            logger.info(
                "%d: scene %s done, %d polygons, %.1f s",
                year,
                rec.item_id,
                rec.n_polygons,
                rec.seconds,
            )

    computed, _ = map_scenes(
        todo,
        run.weights,
        run.cfg.map,
        run.cluster(),
        run_id=run.run_id,
        on_done=on_done,
        progress=run.progress,
        area=_area(run.regions) if run.cfg.clip_to_regions else None,
    )
    return {r.item_id: r for r in computed}


def _collect_year(
    run: _InventoryRun, state: _Year, fresh: dict[str, SceneRecord], summary: YearSummary
) -> None:
    """Read every scene of the year back from the manifest into ``state``; a scene without a
    finished record there counts as failed.

    Computed now or earlier, every scene comes from the manifest, so that a resumed run merges
    exactly what an uninterrupted one does.
    """
    year, manifest = state.year, run.manifest
    for item in state.items:
        rec = manifest.lookup(year, item)
        if rec is None:
            failed = fresh.get(item["id"]) or scene_record(item)
            if failed.status != "failed":
                failed.status, failed.error = "failed", "no record in the manifest"
            summary.failed.append((failed.item_id, failed.error))
            state.records.append(failed)
            state.run_ids.append(run.run_id)
            state.parts.append((item["id"], "failed", ""))
            continue
        state.records.append(_record_from_manifest(rec))
        state.run_ids.append(str(rec["run_id"]))
        state.frames.append(manifest.polygons(year, item["id"]))
        state.parts.append((item["id"], "done", str(rec["polygons_sha256"])))
    summary.scenes = [
        scene_row(rec, rid, run.run_id)
        for rec, rid in zip(state.records, state.run_ids, strict=True)
    ]


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
    fingerprint = _year_fingerprint(run.manifest.scene_hash, state.parts, mcfg, clip)
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
    scenes = scenes_frame(state.records)
    scenes["run_id"] = state.run_ids  # the run that computed each scene, not the one writing
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
