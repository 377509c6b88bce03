"""The map run: the stages chained, one direction, with a record of every scene.

``map_region`` is the whole product in one call: search -> select -> load -> predict ->
vectorize -> merge -> write. Each scene is one unit of work with its own status, error and
timings; a scene that fails is recorded and the run goes on, and the inventory is written only
once, atomically, at the end, so a failure never corrupts an existing file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd

from arctic_rts import __version__
from arctic_rts.config import (
    EARTH_SEARCH_URL,
    InventoryRunConfig,
    MapConfig,
    read_inventory_run,
    validate_bbox,
)
from arctic_rts.errors import ConfigError, InventoryError, WeightsError

#: Scenes whose model stage may be queued on the cluster at once; bounds memory and graph size.
MAX_SCENES_IN_FLIGHT = 2


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
        lines.append(f"polygons  : {len(self.polygons)} thaw slumps after merging")
        return "\n".join(lines)


def _validate_year(year: int) -> int:
    if not isinstance(year, int) or not 2015 <= year <= dt.date.today().year:
        raise ConfigError(
            f"year must be a Sentinel-2 year between 2015 and {dt.date.today().year}, got {year!r}."
        )
    return year


@contextlib.contextmanager
def stac_endpoint(stac: str | Path | None) -> Iterator[str]:
    """Yield a STAC API URL for ``stac``, serving a local catalog for the duration if needed.

    Args:
        stac: None for Earth Search v1, ``"demo"`` for the generated demo catalog, a folder of
            item JSON files or a stac-geoparquet file (served on 127.0.0.1), or an API URL.
    """
    if stac is None:
        yield EARTH_SEARCH_URL
        return
    text = str(stac)
    if text.startswith(("http://", "https://")):
        yield text
        return
    from arctic_rts.catalog import serve_catalog

    if text == "demo":
        from arctic_rts.demo import DEFAULT_DEMO_ROOT, generate_demo

        source: Path = generate_demo(DEFAULT_DEMO_ROOT).items_dir
    else:
        source = Path(text)
        if not source.exists():
            raise ConfigError(f"--stac {text}: no such folder or file, and not an http(s) URL.")
    with serve_catalog(source) as url:
        yield url


def resolve_weights(weights: str | Path | Sequence[str | Path] | None) -> list[Any]:
    """Turn the user's weights argument into model references (the bundled model by default)."""
    from arctic_rts.model.weights import ModelRef, bundled_weights, read_card

    if weights is None:
        paths = [bundled_weights()]
    elif isinstance(weights, (str, Path)):
        paths = [Path(weights)]
    else:
        paths = [Path(w) for w in weights]
    if not paths:
        raise ConfigError("no weights given.")
    refs = [ModelRef.from_path(p) for p in paths]
    # Ensemble members read one loaded array; otherwise every scene would fail on its own.
    first = list(read_card(refs[0].path)["bands"])
    for ref in refs[1:]:
        bands = list(read_card(ref.path)["bands"])
        if bands != first:
            raise WeightsError(
                f"ensemble members must take the same bands in the same order: "
                f"{refs[0].path} takes {first}, {ref.path} takes {bands}."
            )
    return refs


def check_scene_bands(card: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """Refuse weights whose bands none of the selected scenes carries, before any cluster work.

    Without this, a model for other imagery (an L1C model's ``B10`` on L2A scenes) or a card
    with provider names (``red``) fails every scene one by one and leaves an empty inventory.
    A band missing from only some scenes stays a per-scene failure.
    """
    bands = [str(b) for b in card["bands"]]
    lacking = [it for it in items if any(b not in it.get("assets", {}) for b in bands)]
    if items and len(lacking) == len(items):
        missing = sorted({b for it in items for b in bands if b not in it.get("assets", {})})
        raise WeightsError(
            f"the model '{card.get('name')}' needs bands {missing} that none of the "
            f"{len(items)} selected scenes carries; use weights whose card lists canonical "
            "bands of this collection (Sentinel-2 L2A: B01-B09, B8A, B11, B12)."
        )


def _scene_record(item: dict[str, Any]) -> SceneRecord:
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


def _scene_polygons(
    item: dict[str, Any],
    refs: list[Any],
    card: dict[str, Any],
    config: MapConfig,
    run_id: str,
    optimize_graph: bool = True,
) -> Any:
    """The lazy graph of one scene: load -> predict -> vectorize (a dask Delayed).

    ``optimize_graph=False`` keeps the model tasks' ``GPU`` resource annotation (see
    :func:`arctic_rts.cluster.as_delayed`).
    """
    import dask

    from arctic_rts.cluster import as_delayed
    from arctic_rts.load import load_scenes
    from arctic_rts.predict import predict
    from arctic_rts.vectorize import vectorize

    da = load_scenes([item], card["bands"], config.load)[0]
    prob = predict(da, refs if len(refs) > 1 else refs[0], config.predict)
    threshold = config.vectorize.threshold or float(card["threshold"])
    attrs = {
        "scene_id": item["id"],
        "mgrs_tile": da.attrs.get("mgrs_tile", ""),
        "date": str(item["properties"].get("datetime", ""))[:10],
        "year": int(str(item["properties"].get("datetime", "0000"))[:4]),
        "model": card.get("name", ""),
        "weights_sha256": ",".join(r.sha256 for r in refs),
        "run_id": run_id,
    }
    return dask.delayed(vectorize, pure=False)(
        as_delayed(prob, optimize_graph=optimize_graph),
        threshold=threshold,
        config=config.vectorize,
        attrs=attrs,
    )


def map_scenes(
    items: list[dict[str, Any]],
    refs: list[Any],
    card: dict[str, Any],
    config: MapConfig,
    client: Any,
    *,
    run_id: str,
    on_done: Callable[[SceneRecord, gpd.GeoDataFrame | None], None] | None = None,
    progress: bool = True,
) -> tuple[list[SceneRecord], list[gpd.GeoDataFrame]]:
    """Run the per-scene stages on the cluster, a bounded number of scenes at a time.

    Each scene's errors are caught and recorded; the others go on. ``on_done`` is called in the
    client process as each scene finishes (the inventory runner uses it to keep its manifest).
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    from arctic_rts.cluster import gpu_workers

    # Graph optimisation (fusion) drops the model tasks' GPU resource annotation.
    optimize = not gpu_workers(client)
    records = [_scene_record(it) for it in items]
    frames: list[gpd.GeoDataFrame] = []
    pending = list(zip(items, records, strict=True))
    started: dict[Any, tuple[SceneRecord, float]] = {}
    bar = tqdm(total=len(items), desc="scenes", unit="scene", disable=not progress)
    queue = as_completed()

    def submit_next() -> None:
        while pending and len(started) < MAX_SCENES_IN_FLIGHT:
            item, rec = pending.pop(0)
            t0 = time.perf_counter()
            try:
                graph = _scene_polygons(item, refs, card, config, run_id, optimize)
                fut = client.compute(graph, optimize_graph=optimize)
            except Exception as err:  # a scene that cannot even be planned is one failed scene
                _finish(rec, None, f"{type(err).__name__}: {err}", t0)
                continue
            started[fut] = (rec, t0)
            queue.add(fut)

    def _finish(rec: SceneRecord, gdf: gpd.GeoDataFrame | None, error: str, t0: float) -> None:
        rec.seconds = time.perf_counter() - t0
        rec.status = "failed" if error else "done"
        rec.error = error
        rec.n_polygons = 0 if gdf is None else len(gdf)
        if gdf is not None:
            frames.append(gdf)
        bar.update(1)
        if on_done is not None:
            on_done(rec, gdf)

    submit_next()
    while started:
        fut = next(queue)
        rec, t0 = started.pop(fut)
        try:
            gdf = fut.result()
            _finish(rec, gdf, "", t0)
        except Exception as err:
            _finish(rec, None, f"{type(err).__name__}: {err}".splitlines()[0], t0)
        submit_next()
    bar.close()
    return records, frames


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
    weights: str | Path | Sequence[str | Path] | None = None,
    out: str | Path = "rts_inventory.gpkg",
    config: MapConfig | None = None,
    overwrite: bool = False,
    client: Any = None,
    sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    progress: bool = True,
) -> MapResult:
    """Map thaw slumps in ``bbox`` for ``year`` and write them to the GeoPackage ``out``.

    Args:
        bbox: ``(west, south, east, north)`` in degrees (WGS84).
        year: acquisition year; scenes come from ``config.search.months`` of that year.
        stac: STAC API URL, ``"demo"``, a local item folder / geoparquet, or None (Earth Search).
        weights: a safetensors file, a list of them (ensemble: mean probability), or None for
            the bundled demo model.
        out: the GeoPackage to write; an existing one is refused unless ``overwrite``.
        config: stage parameters (defaults in :mod:`arctic_rts.config`).
        overwrite: replace the year's layer of an existing ``out``.
        client: an existing ``distributed.Client``; None connects as ``config.cluster`` says.
        sign: applied to every item found (Planetary Computer URL signing).
        progress: show progress bars.

    Returns:
        The :class:`MapResult` with one record per scene and the merged polygons.
    """
    from arctic_rts.cluster import connect
    from arctic_rts.inventory import merge_polygons, write_inventory
    from arctic_rts.model.weights import read_card
    from arctic_rts.search import search_scenes, select_scenes

    config = config or MapConfig()
    bbox_t = validate_bbox(list(bbox))
    year = _validate_year(year)
    out = Path(out)
    if out.exists() and not overwrite:
        raise InventoryError(f"{out} exists; pass --overwrite (overwrite=True) to replace it.")
    if not out.parent.exists():
        raise ConfigError(f"output folder {out.parent} does not exist.")
    refs = resolve_weights(weights)
    card = read_card(refs[0].path)
    run_id = uuid.uuid4().hex[:12]
    t_start = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    with stac_endpoint(stac) as url:
        found = search_scenes(bbox_t, year, stac_url=url, config=config.search, sign=sign)
        items = select_scenes(found)
        check_scene_bands(card, items)
        stac_label = url if stac is None or str(stac).startswith("http") else str(stac)
    t_search = time.perf_counter() - t_start

    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(connect(config.cluster))
        records, frames = map_scenes(
            items, refs, card, config, client, run_id=run_id, progress=progress
        )
    merged = merge_polygons(
        frames, crs=config.inventory.crs, min_overlap=config.inventory.min_overlap
    )
    run = {
        "run_id": run_id,
        "started": started_at,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "arctic_rts_version": __version__,
        "stac_url": stac_label,
        "query": json.dumps({"bbox": bbox_t, "year": year, **dataclasses.asdict(config.search)}),
        "config": json.dumps(dataclasses.asdict(config)),
        "weights": ",".join(f"{r.path}#{r.sha256}" for r in refs),
        "items_found": len(found),
        "items_used": ",".join(it["id"] for it in items),
        "scenes_failed": sum(r.status == "failed" for r in records),
        "n_polygons": len(merged),
        "seconds_search": round(t_search, 3),
        "seconds_total": round(time.perf_counter() - t_start, 3),
    }
    write_inventory(
        out,
        merged,
        year=year,
        run=run,
        scenes=scenes_frame(records),
        overwrite=overwrite,
        config=config.inventory,
        pixel_size=config.load.resolution,
    )
    return MapResult(out, year, stac_label, records, merged, items, run)


# ---------------------------------------------------------------------------------------------
# Yearly inventory runs: regions x years, a manifest of finished scenes, resume, idempotence

#: Layout version of an inventory run's work folder; records of another version are not reused.
MANIFEST_VERSION = 1
#: Key of ``runs.info`` holding what a year layer was made from (see ``_year_fingerprint``).
FINGERPRINT_KEY = "inventory_fingerprint"


@dataclass
class YearSummary:
    """What an inventory run did for one year."""

    year: int
    n_scenes: int = 0
    #: Scenes computed by this run (including those that failed).
    n_computed: int = 0
    #: Scenes taken from the manifest of an earlier run.
    n_from_manifest: int = 0
    #: ``(item_id, error)`` of each scene that failed; the next run retries them.
    failed: list[tuple[str, str]] = field(default_factory=list)
    n_polygons: int = 0
    #: True when ``rts_<year>`` was (re)written; False when it already held this result.
    written: bool = False
    #: Counts per class of ``changes_<year-1>_<year>``, when the previous year is present.
    changes: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class InventoryRunResult:
    """The outcome of :func:`run_inventory`."""

    out: Path
    work_dir: Path
    run_id: str
    years: list[YearSummary]
    exports: list[Path] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        """Scenes that failed in this run, over all years."""
        return sum(len(y.failed) for y in self.years)

    def summary(self) -> str:
        """One block of lines per year: scenes, slumps, whether the layer changed, changes."""
        lines = [f"inventory : {self.out}", f"work      : {self.work_dir}"]
        for y in self.years:
            state = f"layer rts_{y.year} " + ("written" if y.written else "unchanged")
            if not y.n_scenes:
                state = "nothing written"
            lines.append(
                f"{y.year}      : {y.n_scenes} scenes ({y.n_computed} computed, "
                f"{y.n_from_manifest} from manifest, {len(y.failed)} failed), "
                f"{y.n_polygons} slumps, {state}"
            )
            if y.changes is not None:
                counts = ", ".join(f"{k} {v}" for k, v in y.changes.items())
                lines.append(f"  changes {y.year - 1}->{y.year}: {counts}")
            lines += [f"  note: {n}" for n in y.notes]
            lines += [f"  FAILED {item}: {err}" for item, err in y.failed]
        if self.exports:
            lines.append("exports   : " + ", ".join(str(p) for p in self.exports))
        return "\n".join(lines)


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

    def _path(self, year: int, item_id: str, suffix: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", item_id)
        if safe != item_id:  # keep two ids that differ only in odd characters apart
            safe += "-" + hashlib.sha256(item_id.encode()).hexdigest()[:8]
        # Appended, not with_suffix: ids may hold dots (CDSE's "....SAFE").
        return self.root / "scenes" / str(year) / (safe + suffix)

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
            parquet = self._path(year, rec.item_id, ".parquet")
            tmp = parquet.with_name(f".{parquet.name}.tmp-{os.getpid()}")
            gdf.to_parquet(tmp, index=False)
            doc["polygons_sha256"] = hashlib.sha256(tmp.read_bytes()).hexdigest()
            _replace_durably(tmp, parquet)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        _replace_durably(tmp, target)
        with (self.root / "log.jsonl").open("a") as log:
            keys = ("run_id", "item_id", "year", "status", "finished")
            log.write(json.dumps({k: doc[k] for k in keys}) + "\n")


def _replace_durably(tmp: Path, target: Path) -> None:
    """Flush ``tmp`` to disk and rename it over ``target`` (atomic on one file system)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def _item_key(item: dict[str, Any]) -> str:
    """What identifies an item's pixels beyond its id: a reprocessed scene is computed again.

    Asset hrefs are left out on purpose: signed URLs change on every search, and a local
    catalog may move.
    """
    props = item.get("properties", {})
    keys = ("datetime", "updated", "s2:processing_baseline")
    doc = {"id": item.get("id"), **{k: props.get(k) for k in keys}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _scene_hash(config: MapConfig, refs: list[Any], card: dict[str, Any]) -> str:
    """Hash of everything that decides a scene's polygons: model, loading, tiling, vectorising.

    Device and batch size are left out (they change speed, not output); so are the search
    (which scenes, not what a scene yields) and the merge (applied to the manifest's polygons).
    """
    from arctic_rts.predict import resolve_halo

    predict = dataclasses.asdict(resolve_halo(config.predict, refs))
    for key in ("device", "batch_size"):
        predict.pop(key)
    doc = {
        "load": dataclasses.asdict(config.load),
        "predict": predict,
        "vectorize": dataclasses.asdict(config.vectorize),
        "threshold": config.vectorize.threshold or float(card["threshold"]),
        "bands": list(card["bands"]),
        "weights": [r.sha256 for r in refs],
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
    import shapely
    from shapely.geometry import box

    if cfg.regions_file is None:
        # Densified so that the box keeps its shape when reprojected to the polar CRS.
        geoms = [shapely.segmentize(box(*r.bbox), 0.01) for r in cfg.regions]
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
    from arctic_rts.errors import NoScenesError
    from arctic_rts.search import search_scenes, select_scenes

    chosen: dict[str, dict[str, Any]] = {}
    n_found, notes = 0, []
    for name, geom in zip(regions["name"], regions.geometry, strict=True):
        try:
            found = search_scenes(geom.bounds, year, stac_url=url, config=config.search)
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
    """Slumps whose representative point lies in a region (slumps are kept whole, not cut)."""
    import shapely

    if not len(polygons):
        return polygons
    area = shapely.union_all(regions.to_crs(polygons.crs).geometry.to_numpy())
    inside = shapely.contains(area, polygons.geometry.representative_point().to_numpy())
    return polygons[inside].reset_index(drop=True)


def _export_if_changed(write: Callable[[Path], Path], target: Path) -> Path:
    """Write an export to a temporary file; replace ``target`` only when the bytes differ.

    A rerun with nothing new leaves the file untouched, while an export that a killed run left
    stale (the GeoPackage written, the export not yet) is refreshed.
    """
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{target.suffix}")
    try:
        write(tmp)
        if not target.exists() or target.read_bytes() != tmp.read_bytes():
            _replace_durably(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass
class _InventoryRun:
    """What every year of one :func:`run_inventory` call shares."""

    cfg: InventoryRunConfig
    regions: gpd.GeoDataFrame
    refs: list[Any]
    card: dict[str, Any]
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
    from arctic_rts.model.weights import read_card

    cfg = config if isinstance(config, InventoryRunConfig) else read_inventory_run(config)
    for year in cfg.years:
        _validate_year(year)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    regions = _read_regions(cfg)
    refs = resolve_weights(list(cfg.weights) or None)
    card = read_card(refs[0].path)
    scene_hash = _scene_hash(cfg.map, refs, card)
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
            refs=refs,
            card=card,
            manifest=_Manifest(result.work_dir, scene_hash),
            url=url,
            stac_label=url if cfg.stac is None or cfg.stac.startswith("http") else cfg.stac,
            run_id=result.run_id,
            cluster=cluster,
            progress=progress,
        )
        result.years = [_inventory_year(run, year) for year in cfg.years]
        for summary in result.years:
            summary.changes = change_counts(out, summary.year)
        result.exports = _refresh_exports(out, cfg.exports, regions)
    return result


def _inventory_year(run: _InventoryRun, year: int) -> YearSummary:
    """One year of an inventory run: select, compute what is missing, merge, write if changed."""
    from arctic_rts.inventory import last_write_info, merge_polygons, write_inventory

    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    mcfg, manifest = run.cfg.map, run.manifest
    summary = YearSummary(year)
    items, n_found, summary.notes = _select_year(run.regions, year, run.url, mcfg)
    summary.n_scenes = len(items)
    if not items:
        summary.notes.append(f"no scenes for {year} in any region; year not written.")
        return summary
    check_scene_bands(run.card, items)
    todo = [it for it in items if manifest.lookup(year, it) is None]
    summary.n_computed = len(todo)
    summary.n_from_manifest = len(items) - len(todo)
    fresh: dict[str, SceneRecord] = {}
    if todo:
        computed, _ = map_scenes(
            todo,
            run.refs,
            run.card,
            mcfg,
            run.cluster(),
            run_id=run.run_id,
            on_done=functools.partial(
                manifest.save, year, {it["id"]: it for it in todo}, run_id=run.run_id
            ),
            progress=run.progress,
        )
        fresh = {r.item_id: r for r in computed}

    # Every scene is read back from the manifest, computed now or earlier, so that a resumed
    # run merges exactly what an uninterrupted one does.
    records, run_ids, frames, parts = [], [], [], []
    for item in items:
        rec = manifest.lookup(year, item)
        if rec is None:
            failed = fresh.get(item["id"]) or _scene_record(item)
            if failed.status != "failed":
                failed.status, failed.error = "failed", "no record in the manifest"
            summary.failed.append((failed.item_id, failed.error))
            records.append(failed)
            run_ids.append(run.run_id)
            parts.append((item["id"], "failed", ""))
            continue
        records.append(_record_from_manifest(rec))
        run_ids.append(str(rec["run_id"]))
        frames.append(manifest.polygons(year, item["id"]))
        parts.append((item["id"], "done", str(rec["polygons_sha256"])))
    merged = merge_polygons(frames, crs=mcfg.inventory.crs, min_overlap=mcfg.inventory.min_overlap)
    clip = run.regions if run.cfg.clip_to_regions else None
    if clip is not None:
        merged = _clip_to_regions(merged, clip)
    summary.n_polygons = len(merged)

    if not frames:
        summary.notes.append(f"every scene of {year} failed; year not written.")
        return summary
    out = Path(run.cfg.out)
    fingerprint = _year_fingerprint(manifest.scene_hash, parts, mcfg, clip)
    written = last_write_info(out, year)
    present = written is not None
    written_fp = (written or {}).get(FINGERPRINT_KEY)
    if present and written_fp == fingerprint:
        return summary
    if present and not written_fp and not run.cfg.overwrite:
        raise InventoryError(
            f"{out} already holds year {year} written by another command (no inventory run "
            "fingerprint); set overwrite = true in the run file to replace it, or choose "
            "another out."
        )
    scenes = scenes_frame(records)
    scenes["run_id"] = run_ids  # the run that computed each scene, not the one writing
    info = {
        "run_id": run.run_id,
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "arctic_rts_version": __version__,
        "stac_url": run.stac_label,
        "query": json.dumps(
            {
                "regions": [
                    [str(n), list(g.bounds)]
                    for n, g in zip(run.regions["name"], run.regions.geometry, strict=True)
                ],
                "year": year,
                **dataclasses.asdict(mcfg.search),
            }
        ),
        "config": json.dumps(dataclasses.asdict(mcfg)),
        "weights": ",".join(f"{r.path}#{r.sha256}" for r in run.refs),
        "items_found": n_found,
        "items_used": ",".join(it["id"] for it in items),
        "scenes_failed": len(summary.failed),
        "n_polygons": len(merged),
        "work_dir": str(manifest.root),
        "scene_hash": manifest.scene_hash,
        FINGERPRINT_KEY: fingerprint,
        "seconds_total": round(time.perf_counter() - t0, 3),
    }
    write_inventory(
        out,
        merged,
        year=year,
        run=info,
        scenes=scenes,
        overwrite=present,
        config=mcfg.inventory,
        pixel_size=mcfg.load.resolution,
    )
    summary.written = True
    return summary


def _refresh_exports(out: Path, exports: Sequence[str], regions: gpd.GeoDataFrame) -> list[Path]:
    """Write the requested exports beside ``out`` (only those whose content changed)."""
    from arctic_rts.inventory import export_geoparquet, summary_csv

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
