"""The manifest of finished scenes that makes ``map`` and ``inventory run`` resumable.

A work folder holds one record per finished scene and year: its polygons (``vectorize``
output, in the scene's CRS) and what happened to it. :func:`resume_scenes` computes only the
scenes that the folder does not hold yet, saves each one as it finishes, and then reads every
scene of the year back from the folder, so that a run resumed after a kill merges exactly what
an uninterrupted one does. :func:`~arctic_rts.inventory_run.run_inventory` keeps its folder
(``<out>.work``) across runs; :func:`~arctic_rts.pipeline.map_region` keeps one
(``<out>.map-work``) only until its GeoPackage is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd

from arctic_rts.files import atomic_path, atomic_write, safe_file_name

if TYPE_CHECKING:  # torch stays out of the import of this module
    from arctic_rts.config import MapConfig
    from arctic_rts.model.weights import Weights
    from arctic_rts.pipeline import SceneRecord

logger = logging.getLogger(__name__)

#: Layout version of a work folder; records of another version are not reused. Version 2
#: records which part of its scene each record mapped (version 1 did not, so a record of a
#: scene cropped to smaller regions could be reused for larger ones).
MANIFEST_VERSION = 2
#: The fields of a ``log.jsonl`` line; the first three identify the scene record it logs.
_LOG_KEYS = ("run_id", "item_id", "year", "status", "finished")
#: Why a scene was not computed by ``inventory run --retry-failed``.
NOT_RETRIED = (
    "not computed: --retry-failed computes only the scenes that failed before, and no earlier "
    "run tried this one; run again without --retry-failed"
)

#: A function that computes scenes and calls ``on_done(record, polygons or None)`` as each one
#: finishes; it returns their records (see :func:`~arctic_rts.pipeline.map_scenes`).
ComputeScenes = Callable[
    [list[dict[str, Any]], Callable[["SceneRecord", "gpd.GeoDataFrame | None"], None]],
    list["SceneRecord"],
]


def check_work_dir(root: Path) -> None:
    """Refuse, before any work, a file where a run keeps its work folder ``root``.

    Raises:
        InventoryError: ``root`` exists and is not a folder.
    """
    from arctic_rts.errors import InventoryError

    if root.exists() and not root.is_dir():
        raise InventoryError(
            f"{root} is a file where this run keeps its work folder; move it away or choose "
            "another output."
        )


class Manifest:
    """A work folder: one record per finished scene and year, reused by the next run.

    ``scenes/<year>/<id>.parquet`` holds a scene's polygons and ``scenes/<year>/<id>.json``
    its record; each is written to a temporary file and renamed, the JSON last, so a record
    exists only for a scene whose polygons are complete on disk. ``log.jsonl`` gets one line
    per scene computed, by any run (an audit of the work done; the tests count it). A record
    is reused only when its ``scene_hash`` (model and per-scene parameters) is this run's, its
    polygons file still has its sha256, and the part of the scene it mapped covers what this
    run maps of it: ``area`` (a lon/lat geometry, with ``margin_m`` around it; None: whole
    scenes; see :func:`covers`). The caller holds the output's lock, so no other run writes
    the folder.
    """

    def __init__(
        self,
        root: Path,
        scene_hash: str,
        area: Any = None,
        margin_m: float = 0.0,
        *,
        read_only: bool = False,
    ) -> None:
        self.root = root
        self.scene_hash = scene_hash
        self.area = area
        self.margin_m = margin_m
        #: What each record of this run says it mapped (serialised once, not per scene).
        self.mapped = None if area is None else {"wkb": area.wkb_hex, "margin_m": margin_m}
        if read_only:  # records are only looked up (a dry run): no folder made, nothing tidied
            return
        (root / "scenes").mkdir(parents=True, exist_ok=True)
        # Left by a run killed mid-save; the caller holds the lock, so no live run writes them.
        for stale in (root / "scenes").glob("*/.*.tmp-*"):
            stale.unlink(missing_ok=True)
        self._complete_log()

    def _path(self, year: int, item_id: str, suffix: str) -> Path:
        # Appended, not with_suffix: ids may hold dots (CDSE's "....SAFE").
        return self.root / "scenes" / str(year) / (safe_file_name(item_id) + suffix)

    def _record(
        self, year: int, item: dict[str, Any], status: str, any_version: bool = False
    ) -> dict[str, Any] | None:
        """The scene's record with ``status`` for this item and scene hash, else None; with
        ``any_version`` also one of an earlier layout version."""
        item_id = str(item["id"])
        try:
            rec = json.loads(self._path(year, item_id, ".json").read_text())
        except (OSError, ValueError):
            return None
        ok = (
            isinstance(rec, dict)
            and (any_version or rec.get("manifest_version") == MANIFEST_VERSION)
            and rec.get("item_id") == item_id
            and rec.get("item_key") == item_key(item)
            and rec.get("status") == status
            and rec.get("scene_hash") == self.scene_hash
        )
        return rec if ok else None

    def lookup(self, year: int, item: dict[str, Any]) -> dict[str, Any] | None:
        """The scene's finished record from an earlier run, or None when it must be computed."""
        rec = self._record(year, item, "done")
        if rec is None:
            return None
        done = rec.get("area")  # the same area as this run's needs no geometry at all
        if done != self.mapped and not covers(done, self.area, self.margin_m, item):
            return None
        try:
            data = self._path(year, str(item["id"]), ".parquet").read_bytes()
        except OSError:
            return None
        return rec if rec.get("polygons_sha256") == hashlib.sha256(data).hexdigest() else None

    def failed(self, year: int, item: dict[str, Any]) -> dict[str, Any] | None:
        """The record of an earlier run in which this scene failed (same model and
        parameters, any layout version), or None."""
        return self._record(year, item, "failed", any_version=True)

    def tried(self, year: int, item: dict[str, Any]) -> bool:
        """Whether an earlier run with the same model and parameters computed this scene,
        whether it failed or finished (a finished record may still not be reusable: an older
        layout, or another part of the scene mapped)."""
        return self.failed(year, item) is not None or (
            self._record(year, item, "done", any_version=True) is not None
        )

    def polygons(self, year: int, item_id: str) -> gpd.GeoDataFrame:
        """The polygons of a finished scene."""
        return gpd.read_parquet(self._path(year, item_id, ".parquet"))

    def holds_finished_scenes(self) -> bool:
        """Whether any record of a finished (done) scene is in the folder."""
        for path in (self.root / "scenes").glob("*/*.json"):
            try:
                if json.loads(path.read_text()).get("status") == "done":
                    return True
            except (OSError, ValueError, AttributeError):
                continue
        return False

    def remove(self) -> None:
        """Delete the work folder (its run is over and its output written)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def save(
        self,
        year: int,
        items: dict[str, dict[str, Any]],
        rec: SceneRecord,
        gdf: gpd.GeoDataFrame | None,
        *,
        run_id: str,
    ) -> None:
        """Record a scene that finished (done or failed), atomically.

        Raises:
            StorageError: The folder cannot be written (full disk, read-only); the records
                saved before are kept.
        """
        from arctic_rts.inventory import storage_error

        target = self._path(year, rec.item_id, ".json")
        try:
            self._save(year, items, rec, gdf, run_id, target)
        except OSError as err:
            raise storage_error(target, err) from err

    def _save(
        self,
        year: int,
        items: dict[str, dict[str, Any]],
        rec: SceneRecord,
        gdf: gpd.GeoDataFrame | None,
        run_id: str,
        target: Path,
    ) -> None:
        from shapely.geometry import mapping

        target.parent.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in dataclasses.asdict(rec).items() if k != "footprint"}
        doc: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "item_id": rec.item_id,
            "item_key": item_key(items[rec.item_id]),
            "year": year,
            "scene_hash": self.scene_hash,
            "run_id": run_id,
            "status": rec.status,
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "record": record,
            "footprint": mapping(rec.footprint) if rec.footprint is not None else None,
            "area": self.mapped,
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


def item_key(item: dict[str, Any]) -> str:
    """What identifies an item's pixels beyond its id: a reprocessed scene is computed again.

    Asset hrefs are left out on purpose: signed URLs change on every search, and a local
    catalog may move.
    """
    props = item.get("properties", {})
    keys = ("datetime", "updated", "s2:processing_baseline")
    doc = {"id": item.get("id"), **{k: props.get(k) for k in keys}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def covers(done: dict[str, Any] | None, area: Any, margin_m: float, item: dict[str, Any]) -> bool:
    """Whether a scene record that mapped ``done`` of its scene (``{"wkb": lon/lat area,
    "margin_m": m}``; None: the whole scene) holds all that a run mapping ``area`` with
    ``margin_m`` (None: the whole scene) needs of STAC ``item``'s scene."""
    import shapely
    from shapely.geometry import shape

    if done is None:
        return True
    if float(done.get("margin_m", 0.0)) < margin_m:
        return False
    mapped = shapely.from_wkb(bytes.fromhex(str(done["wkb"])))
    footprint = shape(item["geometry"])
    needed = footprint if area is None else shapely.intersection(area, footprint)
    return bool(needed.is_empty or shapely.covers(shapely.buffer(mapped, 1e-9), needed))


def scene_hash(config: MapConfig, weights: Weights) -> str:
    """Hash of everything that decides a scene's polygons: model, loading, tiling, vectorising.

    Device and batch size are left out (they change speed, not output); so are the search
    (which scenes, not what a scene yields), the merge (applied to the manifest's polygons)
    and the area a run maps of each scene (each record keeps its own; see :func:`covers`).
    """
    from arctic_rts.predict import resolve_halo

    predict = dataclasses.asdict(resolve_halo(config.predict, weights))
    for key in ("device", "batch_size"):
        predict.pop(key)
    doc: dict[str, Any] = {
        "load": dataclasses.asdict(config.load),
        "predict": predict,
        "vectorize": dataclasses.asdict(config.vectorize.for_model(*weights.postprocessing)),
        "bands": list(weights.bands),
        "weights": list(weights.sha256),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_from_manifest(rec: dict[str, Any]) -> SceneRecord:
    """The :class:`~arctic_rts.pipeline.SceneRecord` that a manifest record holds."""
    from shapely.geometry import shape

    from arctic_rts.pipeline import SceneRecord

    fields = dict(rec["record"])
    fp = rec.get("footprint")
    return SceneRecord(**fields, footprint=shape(fp) if fp else None)


@dataclass
class SceneResults:
    """Every selected scene of one year, computed now or read from the manifest, in item order."""

    #: One record per scene; a scene without a finished record counts as failed.
    records: list[SceneRecord] = field(default_factory=list)
    #: The run that computed each scene (this run's id for failed ones).
    run_ids: list[str] = field(default_factory=list)
    #: ``(item id, status, polygons sha256)`` per scene, for fingerprints.
    parts: list[tuple[str, str, str]] = field(default_factory=list)
    #: The polygons of each finished scene, from the manifest.
    frames: list[gpd.GeoDataFrame] = field(default_factory=list)
    #: Scenes computed by this run (failed or not), and finished scenes taken from an earlier
    #: run's record.
    n_computed: int = 0
    n_reused: int = 0
    #: Item ids of the scenes computed because an earlier run recorded them as failed.
    retried: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[tuple[str, str]]:
        """``(item id, error)`` of each scene without a finished record."""
        return [(r.item_id, r.error) for r in self.records if r.status == "failed"]


def scenes_to_compute(
    manifest: Manifest, year: int, items: list[dict[str, Any]], *, retry_failed: bool = False
) -> tuple[list[dict[str, Any]], set[str]]:
    """The items of ``items`` a run computes, in order: those without a reusable finished
    record, or with ``retry_failed`` those of them that an earlier run tried (failed, or
    finished in a record this run cannot reuse); and the ids that ``retry_failed`` leaves out
    (no run has tried them)."""
    todo = [it for it in items if manifest.lookup(year, it) is None]
    if not retry_failed:
        return todo, set()
    skipped = {it["id"] for it in todo if not manifest.tried(year, it)}
    return [it for it in todo if it["id"] not in skipped], skipped


def resume_scenes(
    manifest: Manifest,
    year: int,
    items: list[dict[str, Any]],
    *,
    run_id: str,
    compute: ComputeScenes,
    retry_failed: bool = False,
) -> SceneResults:
    """Compute the scenes of ``items`` that the manifest lacks, save each as it finishes, then
    read every scene back from the manifest.

    With ``retry_failed`` only the scenes an earlier run recorded as failed are computed; a
    scene without any record is left out and counts as failed (:data:`NOT_RETRIED`).

    Raises:
        StorageError: A record cannot be saved (the scenes saved before are kept).
    """
    todo, skipped = scenes_to_compute(manifest, year, items, retry_failed=retry_failed)
    failed_before = {it["id"] for it in todo if manifest.failed(year, it) is not None}
    n_reused = len(items) - len(todo) - len(skipped)
    logger.debug("%d: %d scenes to compute, %d from the manifest", year, len(todo), n_reused)
    fresh: dict[str, SceneRecord] = {}
    if todo:
        on_done = functools.partial(
            manifest.save, year, {it["id"]: it for it in todo}, run_id=run_id
        )
        fresh = {r.item_id: r for r in compute(todo, on_done)}
    results = SceneResults(
        n_computed=len(todo), retried=[it["id"] for it in todo if it["id"] in failed_before]
    )
    for item in items:
        _collect(manifest, year, item, run_id, fresh, skipped, results)
    return results


def _collect(
    manifest: Manifest,
    year: int,
    item: dict[str, Any],
    run_id: str,
    fresh: dict[str, SceneRecord],
    skipped: set[str],
    results: SceneResults,
) -> None:
    """Add one scene to ``results`` from its finished record, or as failed without one."""
    from arctic_rts.pipeline import scene_record

    rec = manifest.lookup(year, item)
    if rec is None:
        failed = fresh.get(item["id"]) or scene_record(item)
        if failed.status != "failed":
            failed.status = "failed"
            failed.error = NOT_RETRIED if item["id"] in skipped else "no record in the manifest"
        results.records.append(failed)
        results.run_ids.append(run_id)
        results.parts.append((item["id"], "failed", ""))
        return
    results.records.append(record_from_manifest(rec))
    results.run_ids.append(str(rec["run_id"]))
    results.frames.append(manifest.polygons(year, item["id"]))
    results.parts.append((item["id"], "done", str(rec["polygons_sha256"])))
    if rec["run_id"] != run_id:
        results.n_reused += 1
