"""The map run: the stages chained, one direction, with a record of every scene.

``map_region`` is the whole product in one call: search -> select -> load -> predict ->
vectorize -> merge -> write. Each scene is one unit of work with its own status, error and
timings; a scene that fails is recorded and the run goes on, and the inventory is written only
once, atomically, at the end, so a failure never corrupts an existing file. The model is
resolved once, in the client, into one :class:`~arctic_rts.model.weights.Weights`; only its
small references travel to the workers. The yearly runner that builds on this lives in
:mod:`arctic_rts.inventory_run`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
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
from arctic_rts.config import ClusterConfig, MapConfig, bbox_geometry, validate_bbox, validate_year
from arctic_rts.errors import IncompleteRunError, InventoryError

if TYPE_CHECKING:  # torch stays out of the import of this module
    from arctic_rts.manifest import Manifest, SceneResults
    from arctic_rts.model.weights import Weights


@dataclass
class SceneRecord:
    """What happened to one scene in a run (one row of the inventory's ``scenes`` table)."""

    item_id: str
    mgrs_tile: str
    datetime: str
    epsg: int
    cloud_cover: float
    footprint: Any
    status: str = "pending"
    error: str = ""
    n_polygons: int = 0
    seconds: float = 0.0


@dataclass
class MapResult:
    """The outcome of :func:`map_region`."""

    out: Path
    year: int
    stac_url: str
    scenes: list[SceneRecord]
    polygons: gpd.GeoDataFrame
    items: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        """Number of scenes that failed."""
        return sum(s.status == "failed" for s in self.scenes)

    def summary(self) -> str:
        """A short human-readable report of the run."""
        lines = [
            f"inventory : {self.out}",
            f"year      : {self.year}",
            f"STAC API  : {self.stac_url}",
        ]
        lines.append(f"scenes    : {len(self.scenes)} ({self.n_failed} failed)")
        for s in self.scenes:
            extra = f"  ERROR: {s.error}" if s.error else f"  {s.n_polygons} polygons"
            lines.append(
                f"  {s.item_id}  tile {s.mgrs_tile}  {s.datetime[:10]}  "
                f"cloud {s.cloud_cover:.1f}%  {s.status} in {s.seconds:.1f}s{extra}"
            )
        if self.run.get("scenes_resumed"):
            lines.append(
                f"resumed   : {self.run['scenes_resumed']} scenes finished by an earlier, "
                "interrupted run of this command (its work folder)"
            )
        lines.append(f"polygons  : {len(self.polygons)} thaw slumps after merging")
        if self.run.get("clip") == "bbox":
            lines.append(
                "clipped   : only the bbox's pixels (+ halo and margin) were mapped; kept: slumps "
                "whose representative point lies in the bbox, whole"
            )
        return "\n".join(lines)


def check_model_fits(weights: Weights, items: list[dict[str, Any]], config: MapConfig) -> None:
    """Refuse, before any cluster work, a model the selected scenes cannot feed or must not meet.

    Weights whose bands no scene carries would fail every scene one by one; a model trained on
    generated demo scenes is refused on real ones (unless ``config.allow_demo_model``).
    """
    from arctic_rts.model.domain import check_domain
    from arctic_rts.model.weights import check_bands

    check_bands(weights, *(it.get("assets", {}) for it in items), exact=False)
    check_domain(weights.domain, weights.name, items, allow_demo_model=config.allow_demo_model)


def scene_record(item: dict[str, Any]) -> SceneRecord:
    """A pending record of the scene of STAC ``item``."""
    from shapely.geometry import shape

    from arctic_rts.search import mgrs_tile

    props = item["properties"]
    return SceneRecord(
        item_id=item["id"],
        mgrs_tile=mgrs_tile(item),
        datetime=str(props.get("datetime", "")),
        epsg=int(props.get("proj:epsg", 0) or 0),
        cloud_cover=float(props.get("eo:cloud_cover", float("nan"))),
        footprint=shape(item["geometry"]),
    )


def _scene_graph(
    item: dict[str, Any],
    weights: Weights,
    config: MapConfig,
    run_id: str,
    optimize_graph: bool = True,
    sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    area: Any = None,
    read_ahead: int | None = None,
    progress_topic: str | None = None,
) -> tuple[Any, int]:
    """The lazy graph of one scene, load -> predict -> vectorize (a dask Delayed), and the
    number of model tiles it runs.

    Every stage works on pieces whose size does not depend on the scene's: the scene is read
    in the chunks :func:`~arctic_rts.predict.input_chunks` picks for its model tiles, and
    vectorised block by block (:func:`~arctic_rts.vectorize.vectorize_windows`); with
    ``read_ahead``, reads wait for the model (see :func:`~arctic_rts.predict.predict`).
    ``optimize_graph=False`` keeps the model tasks' ``GPU`` resource annotation (see
    :func:`arctic_rts.cluster.as_delayed`). With ``area`` (lon/lat), only the scene's pixels
    over the area, the model's halo and ``config.area_margin_m`` are read and mapped. With
    ``progress_topic``, each model task reports its tiles on that topic, labelled
    ``<run_id>:<item id>`` (see :func:`~arctic_rts.predict.predict`).
    """
    from arctic_rts.load import load_scenes
    from arctic_rts.predict import block_tiles, input_chunks, predict, resolve_halo
    from arctic_rts.vectorize import vectorize_windows

    pconf = resolve_halo(config.predict, weights)
    margin = (pconf.halo or 0) * config.load.resolution + config.area_margin_m

    def read_chunks(scene: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
        # the model's tile grid starts at the crop's origin: chunks from there, one before it
        height, width = scene.shape[1:]
        window = area_window(scene, area, margin) if area is not None else None
        rows, cols = window or (slice(0, height), slice(0, width))
        inner = input_chunks(rows.stop - rows.start, cols.stop - cols.start, pconf)
        return tuple(
            tuple(n for n in (part.start, *sizes, size - part.stop) if n > 0)
            for part, sizes, size in zip((rows, cols), inner, (height, width), strict=True)
        )  # type: ignore[return-value]

    bands = list(weights.bands)
    da = load_scenes([item], bands, config.load, config.network, sign=sign, chunks=read_chunks)[0]
    if area is not None:
        da = crop_to_area(da, area, margin)
    report = (progress_topic, f"{run_id}:{item['id']}") if progress_topic else None
    prob = predict(da, weights, pconf, read_ahead=read_ahead, progress=report)
    tiles = int(block_tiles(prob.sizes["y"], prob.sizes["x"], pconf).sum())
    if "water" in prob.coords:  # SCL water, read by load_scenes with the cloud mask
        prob = prob.where(~prob["water"], 0.0).astype("float32").drop_vars("water")
    vconf = config.vectorize.for_model(*weights.postprocessing)
    attrs = {
        "scene_id": item["id"],
        "mgrs_tile": da.attrs.get("mgrs_tile", ""),
        "date": str(item["properties"].get("datetime", ""))[:10],
        "year": int(str(item["properties"].get("datetime", "0000"))[:4]),
        "model": weights.name,
        "weights_sha256": ",".join(weights.sha256),
        "run_id": run_id,
    }
    graph = vectorize_windows(
        prob, threshold=vconf.threshold, config=vconf, attrs=attrs, optimize_graph=optimize_graph
    )
    return graph, tiles


def area_window(da: Any, area: Any, margin_m: float) -> tuple[slice, slice] | None:
    """Rows and columns of a scene ``(band, y, x)`` over a lon/lat ``area``, grown by
    ``margin_m``; None when the scene does not reach the area."""
    import numpy as np
    import shapely

    # Each part of the area in the scene's CRS, cut to the scene: regions elsewhere (other
    # zones, the far side of 180 degrees) must not widen the crop.
    parts = gpd.GeoSeries(shapely.get_parts(area), crs="EPSG:4326").to_crs(da.rio.crs)
    over = parts.intersection(shapely.box(*da.rio.bounds()).buffer(margin_m))
    over = over[~over.is_empty]
    if over.empty:
        return None
    xmin, ymin, xmax, ymax = over.total_bounds
    xs, ys = da["x"].to_numpy(), da["y"].to_numpy()
    ix = np.flatnonzero((xs >= xmin - margin_m) & (xs <= xmax + margin_m))
    iy = np.flatnonzero((ys >= ymin - margin_m) & (ys <= ymax + margin_m))
    if len(ix) < 2 or len(iy) < 2:
        return None
    return slice(int(iy[0]), int(iy[-1]) + 1), slice(int(ix[0]), int(ix[-1]) + 1)


def crop_to_area(da: Any, area: Any, margin_m: float) -> Any:
    """The part of a scene ``(band, y, x)`` over a lon/lat ``area``, grown by ``margin_m``
    (:func:`area_window`).

    Lazy (an index selection). A scene that does not reach the area keeps one 2 x 2 corner, so
    that every later stage still sees an array (and finds nothing in it).
    """
    window = area_window(da, area, margin_m)
    if window is None:
        return da.isel(x=slice(0, 2), y=slice(0, 2)).where(False)
    return da.isel(y=window[0], x=window[1])


def keep_inside(polygons: gpd.GeoDataFrame, area: Any) -> gpd.GeoDataFrame:
    """Slumps whose representative point lies in the lon/lat ``area`` (kept whole, not cut):
    the one rule by which ``map --bbox`` and ``inventory run`` (``clip_to_regions``) clip."""
    import shapely

    if not len(polygons):
        return polygons
    parts = gpd.GeoSeries(shapely.get_parts(area), crs="EPSG:4326").to_crs(polygons.crs)
    # On a 1 cm grid, so that the halves of an area split at 180 degrees join without a seam.
    inside_area = shapely.union_all(shapely.set_precision(parts.to_numpy(), 0.01))
    inside = shapely.contains(inside_area, polygons.geometry.representative_point().to_numpy())
    return polygons[inside].reset_index(drop=True)


def map_scenes(
    items: list[dict[str, Any]],
    weights: Weights,
    config: MapConfig,
    client: Any,
    *,
    run_id: str,
    on_done: Callable[[SceneRecord, gpd.GeoDataFrame | None], None] | None = None,
    progress: bool = True,
    sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    area: Any = None,
) -> tuple[list[SceneRecord], list[gpd.GeoDataFrame]]:
    """Run the per-scene stages on the cluster, a bounded number of scenes at a time
    (:func:`scenes_in_flight`): the next scene's graph is built while the cluster works and
    submitted as soon as one finishes.

    Each scene's errors are caught and recorded; the others go on. ``on_done`` is called in the
    client process as each scene finishes (the inventory runner uses it to keep its manifest).
    ``weights`` comes from :func:`~arctic_rts.model.weights.resolve_weights`; no card is read
    here. ``area`` (a lon/lat geometry) limits each scene to the pixels over it, plus the halo
    and ``config.area_margin_m`` (see :func:`crop_to_area`). ``progress`` shows a bar of
    scenes; the stages inside each scene (model tiles done of total, vectorise) are logged
    whatever ``progress`` says (see :class:`~arctic_rts.progress.StageProgress`). The run
    registers its worker plugins on the client's cluster, where they stay
    (:func:`~arctic_rts.worker_plugins.prepare_workers`).
    """
    from distributed import as_completed
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from arctic_rts.cluster import gpu_workers, task_error
    from arctic_rts.progress import PROGRESS_TOPIC, StageProgress
    from arctic_rts.worker_plugins import prepare_workers

    # Graph optimisation (fusion) drops the model tasks' GPU resource annotation.
    optimize = not gpu_workers(client)
    records = [scene_record(it) for it in items]
    frames: list[gpd.GeoDataFrame] = []
    pending = collections.deque(zip(items, records, strict=True))
    # graphs built ahead (record, seconds spent building, graph or None, tiles, error): built
    # while the cluster works, so a finished scene's slot is filled at once
    ahead: list[tuple[SceneRecord, float, Any, int, str]] = []
    started: dict[Any, tuple[SceneRecord, float]] = {}
    stages = StageProgress(run_id)
    bar = tqdm(total=len(items), desc="scenes", unit="scene", disable=not progress)
    queue = as_completed()

    def plan(item: dict[str, Any], rec: SceneRecord) -> tuple[SceneRecord, float, Any, int, str]:
        t0 = time.perf_counter()
        # a scene's reads wait for its model tasks: as many windows ahead as the cluster has
        # threads now (workers of an adaptive cluster join during the run)
        threads = sum(client.nthreads().values())
        try:
            graph, tiles = _scene_graph(
                item, weights, config, run_id, optimize, sign, area,
                read_ahead=max(1, threads), progress_topic=PROGRESS_TOPIC,
            )  # fmt: skip
        except Exception as err:  # a scene that cannot even be planned is one failed scene
            return rec, time.perf_counter() - t0, None, 0, f"{type(err).__name__}: {err}"
        return rec, time.perf_counter() - t0, graph, tiles, ""

    def submit_next() -> None:
        while (ahead or pending) and len(started) < scenes_in_flight(config.cluster, client):
            rec, seconds, graph, tiles, error = ahead.pop() if ahead else plan(*pending.popleft())
            t0 = time.perf_counter() - seconds
            if graph is not None:
                stages.start(rec.item_id, tiles)
                try:
                    fut = client.compute(graph, optimize_graph=optimize)
                except Exception as err:
                    error = f"{type(err).__name__}: {err}"
            if error:
                _finish(rec, None, error, t0)
                continue
            started[fut] = (rec, t0)
            queue.add(fut)

    def plan_ahead() -> None:
        if pending and not ahead:
            ahead.append(plan(*pending.popleft()))

    def _finish(rec: SceneRecord, gdf: gpd.GeoDataFrame | None, error: str, t0: float) -> None:
        rec.seconds = time.perf_counter() - t0
        rec.status = "failed" if error else "done"
        rec.error = error
        rec.n_polygons = 0 if gdf is None else len(gdf)
        if gdf is not None:
            frames.append(gdf)
        stages.finish(rec.item_id, None if error else rec.n_polygons)
        bar.update(1)
        if on_done is not None:
            on_done(rec, gdf)

    # Log lines (the stages' progress) go above the scenes bar instead of through it.
    loggers = [logging.getLogger("arctic_rts")]
    console = logging_redirect_tqdm(loggers, tqdm_class=tqdm) if progress else None
    # One handler per topic and client: a second run on the same client at the same time
    # replaces this run's handler, so this run's tiles are no longer counted (its scenes still
    # finish and report as usual).
    client.subscribe_topic(PROGRESS_TOPIC, stages.event)
    prepare_workers(client)
    try:
        with console or contextlib.nullcontext():
            submit_next()
            plan_ahead()
            while started:
                fut = next(queue)
                rec, t0 = started.pop(fut)
                submit_next()  # the next scene goes out before this one's result is handled
                try:
                    gdf = fut.result()
                except Exception as err:  # the scene's failure; on_done's own errors end the run
                    _finish(rec, None, task_error(err, client), t0)
                else:
                    _finish(rec, gdf, "", t0)
                del fut
                plan_ahead()
            bar.close()
    finally:
        client.unsubscribe_topic(PROGRESS_TOPIC)
        # an error or an interrupt leaves no scene running on a cluster that outlives the run
        client.cancel(list(started))
    return records, frames


def scenes_in_flight(config: ClusterConfig, client: Any) -> int:
    """How many scenes :func:`map_scenes` keeps on the cluster at once: the configured number,
    else one more than the client's workers at the moment (at least 2)."""
    if config.scenes_in_flight is not None:
        return config.scenes_in_flight
    return max(2, len(client.nthreads()) + 1)


def scenes_frame(records: list[SceneRecord]) -> gpd.GeoDataFrame:
    """The ``scenes`` table of the inventory (footprints in EPSG:4326)."""
    rows = [
        # The inventory's column is ``scene_id``; an ``item_id`` key would land in ``extra``.
        {("scene_id" if k == "item_id" else k): v for k, v in dataclasses.asdict(r).items()}
        for r in records
    ]
    for row in rows:
        del row["footprint"]
    return gpd.GeoDataFrame(rows, geometry=[r.footprint for r in records], crs="EPSG:4326")


def map_region(
    bbox: Sequence[float],
    year: int,
    *,
    stac: str | Path | None = None,
    weights: Weights | str | Path | Sequence[str | Path] | None = None,
    out: str | Path = "rts_inventory.gpkg",
    config: MapConfig | None = None,
    overwrite: bool = False,
    replace_partial: bool = False,
    client: Any = None,
    sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    progress: bool = True,
    clip: bool = True,
) -> MapResult:
    """Map thaw slumps in ``bbox`` for ``year`` and write them to the GeoPackage ``out``, and a
    quick-look PNG of it beside it (:func:`~arctic_rts.gis.write_quicklook`).

    Before any search or compute, ``out`` is checked (its folder exists and takes files, an
    existing file is a readable GeoPackage) and its write lock is taken for the whole run, so
    a run that could not write its result never starts. A result in which scenes failed is
    written only where it loses nothing: a year that ``out`` does not hold yet gets the
    scenes that succeeded; a year it holds is replaced only by a complete result, or with
    ``replace_partial``. When every scene fails nothing is written (unless
    ``replace_partial``).

    Finished scenes are kept in the work folder ``<out>.map-work`` until the GeoPackage is
    written, so the same call after a kill, an interrupt or a refused write computes only the
    scenes that did not finish, and writes what an uninterrupted run writes.

    Args:
        bbox: ``(west, south, east, north)`` in degrees (WGS84).
        year: acquisition year; scenes come from ``config.search.months`` of that year.
        stac: STAC API URL, ``"demo"``, a local item folder / geoparquet, or None (Earth Search).
        weights: a safetensors file, a list of them (ensemble: mean probability), None for
            the bundled demo model, or the :class:`~arctic_rts.model.weights.Weights` that
            :func:`~arctic_rts.model.weights.resolve_weights` made of one of these (its cards
            are then not read again).
        out: the GeoPackage to write; an existing one is refused unless ``overwrite``.
        config: stage parameters (defaults in :mod:`arctic_rts.config`).
        overwrite: replace the year's layer of an existing ``out``.
        replace_partial: write the year even when scenes failed and that replaces the layer
            ``out`` holds (or writes one from no scene at all).
        client: an existing ``distributed.Client``; None connects as ``config.cluster`` says.
        sign: applied to every item found (Planetary Computer URL signing), and again to
            every href each time a block is read, so expiring tokens are renewed.
        progress: show progress bars.
        clip: map only the pixels over ``bbox`` (plus the model's halo and
            ``config.area_margin_m``) and keep the slumps whose representative point lies in it,
            whole: the rule ``inventory run`` applies to its regions. False maps and keeps the
            selected scenes whole (MGRS tiles reach far beyond a small bbox).

    Returns:
        The :class:`MapResult` with one record per scene and the merged polygons.

    Raises:
        IncompleteRunError: Scenes failed and writing would lose or hide data (see above);
            ``out`` is left as it was.
        StorageError: ``out`` cannot be written (read-only folder, full disk...).
    """
    from arctic_rts.inventory import check_writable, inventory_years, lock_inventory
    from arctic_rts.manifest import check_work_dir

    config = config or MapConfig()
    bbox_t = validate_bbox(list(bbox))
    year = validate_year(year)
    out = Path(out)
    if out.exists() and not overwrite:
        raise InventoryError(f"{out} exists; pass --overwrite (overwrite=True) to replace it.")
    check_writable(out)
    check_work_dir(map_work_dir(out))
    with lock_inventory(out):
        held = year in inventory_years(out)
        job = _MapJob(bbox_t, year, out, config, overwrite, replace_partial, held, clip)
        return _map_locked(job, stac, weights, client, sign, progress)


@dataclass(frozen=True)
class _MapJob:
    """What :func:`map_region` was asked to do, once validated."""

    bbox: tuple[float, ...]
    year: int
    out: Path
    config: MapConfig
    overwrite: bool
    replace_partial: bool
    #: ``out`` already holds this year's layer.
    held: bool
    #: Map only the bbox's pixels and keep the slumps in it (see :func:`map_region`).
    clip: bool = True


def _map_locked(
    job: _MapJob,
    stac: str | Path | None,
    weights: Weights | str | Path | Sequence[str | Path] | None,
    client: Any,
    sign: Callable[[dict[str, Any]], dict[str, Any]] | None,
    progress: bool,
) -> MapResult:
    """The body of :func:`map_region`, run under ``out``'s lock.

    Each scene is saved to the work folder ``<out>.map-work`` as it finishes and every scene
    is read back from there (:func:`~arctic_rts.manifest.resume_scenes`), so a rerun after a
    kill or a failure computes only the scenes that did not finish and writes what an
    uninterrupted run writes. The folder is removed once the GeoPackage is written, or when
    the run stops without a finished scene to keep.
    """
    from arctic_rts.cluster import connect
    from arctic_rts.manifest import Manifest, resume_scenes, scene_hash
    from arctic_rts.model.domain import default_weights
    from arctic_rts.model.weights import resolve_weights

    model = resolve_weights(weights if weights is not None else default_weights(stac))
    area = bbox_geometry(job.bbox, densify=0.01) if job.clip else None
    run: dict[str, Any] = {
        "run_id": uuid.uuid4().hex[:12],
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    t_start = time.perf_counter()
    found, items, stac_label = _search(job, stac, sign, model)
    run["seconds_search"] = round(time.perf_counter() - t_start, 3)
    manifest = Manifest(
        map_work_dir(job.out), scene_hash(job.config, model), area, job.config.area_margin_m
    )
    try:
        with contextlib.ExitStack() as stack:

            def compute(todo: list[dict[str, Any]], on_done: Any) -> list[SceneRecord]:
                nonlocal client
                if client is None:  # connected on first need: a resumed run may need none
                    client = stack.enter_context(connect(job.config.cluster))
                records, _ = map_scenes(
                    todo, model, job.config, client, run_id=str(run["run_id"]),
                    on_done=on_done, progress=progress, sign=sign, area=area,
                )  # fmt: skip
                return records

            scenes = resume_scenes(
                manifest, job.year, items, run_id=str(run["run_id"]), compute=compute
            )
        _refuse_lossy_write(job, scenes.records, manifest)
        run |= {"items_found": len(found), "scenes_resumed": scenes.n_reused}
        result = _write_map(job, scenes, items, model, area, stac_label, run, t_start)
    except BaseException:
        if not manifest.holds_finished_scenes():
            manifest.remove()
        raise
    manifest.remove()
    return result


def map_work_dir(out: Path) -> Path:
    """The work folder that keeps a map run's finished scenes until its GeoPackage is written:
    ``<out>.map-work`` (``inventory run`` keeps ``<out>.work``, across runs)."""
    return out.with_name(out.name + ".map-work")


def _search(
    job: _MapJob,
    stac: str | Path | None,
    sign: Callable[[dict[str, Any]], dict[str, Any]] | None,
    model: Weights,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Search and select the job's scenes and check that the model fits them: the items
    found, those selected, and the STAC API's name for the ``runs`` table."""
    from arctic_rts.asset_checks import asset_policy
    from arctic_rts.search import search_scenes, select_scenes

    config = job.config
    with stac_endpoint(stac) as url:
        found = search_scenes(
            job.bbox, job.year, stac_url=url, config=config.search, sign=sign,
            network=config.network, assets=asset_policy(url, config.load),
        )  # fmt: skip
        items = select_scenes(found)
        check_model_fits(model, items, config)
    return found, items, url if stac is None or str(stac).startswith("http") else str(stac)


def _write_map(
    job: _MapJob,
    scenes: SceneResults,
    items: list[dict[str, Any]],
    model: Weights,
    area: Any,
    stac_label: str,
    run: dict[str, Any],
    t_start: float,
) -> MapResult:
    """Merge the scenes' polygons, keep those in the bbox, and write the year's layer."""
    from arctic_rts.gis import write_quicklook
    from arctic_rts.inventory import write_inventory
    from arctic_rts.merge import merge_polygons

    config, year = job.config, job.year
    merged = merge_polygons(
        scenes.frames,
        crs=config.inventory.crs,
        min_overlap=config.inventory.min_overlap,
        drop_cut=config.inventory.drop_cut,
    )
    if area is not None:
        merged = keep_inside(merged, area)
    run |= {
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "arctic_rts_version": __version__,
        "stac_url": stac_label,
        "query": json.dumps({"bbox": job.bbox, "year": year, **dataclasses.asdict(config.search)}),
        "clip": "bbox" if job.clip else "none",
        "config": json.dumps(dataclasses.asdict(config)),
        "weights": ",".join(f"{r.path}#{r.sha256}" for r in model.references),
        "items_used": ",".join(it["id"] for it in items),
        "scenes_failed": len(scenes.failed),
        "n_polygons": len(merged),
        "seconds_total": round(time.perf_counter() - t_start, 3),
    }
    write_inventory(
        job.out,
        merged,
        year=year,
        run=run,
        scenes=scenes_frame(scenes.records),
        overwrite=job.overwrite,
        config=config.inventory,
        pixel_size=config.load.resolution,
    )
    write_quicklook(job.out)
    return MapResult(job.out, year, stac_label, scenes.records, merged, items, run)


def _refuse_lossy_write(job: _MapJob, records: list[SceneRecord], manifest: Manifest) -> None:
    """Raise when writing this result would replace a held year with a partial one, or write
    a layer from no scene at all (neither when ``job.replace_partial``)."""
    failed = [r for r in records if r.status == "failed"]
    if not failed or job.replace_partial:
        return
    if job.held:
        where = f"{job.out} still holds the rts_{job.year} of an earlier run, unchanged"
    elif len(failed) == len(records):
        where = f"nothing was written to {job.out}"
    else:
        return  # a new year: what succeeded is written, the failures are recorded with it
    kept = ""
    if len(failed) < len(records):
        kept = (
            f" The {len(records) - len(failed)} finished scenes are kept in {manifest.root}: "
            "the same command computes only the others."
        )
    raise IncompleteRunError(
        f"{len(failed)} of {len(records)} scenes failed (first: {failed[0].item_id}: "
        f"{failed[0].error}); {where}. Fix the cause and rerun, or pass --replace-partial "
        f"(replace_partial=True) to write what succeeded.{kept}"
    )
