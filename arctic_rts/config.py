"""Parameters of every stage as small frozen dataclasses: the one copy of each default.

The library, the CLI and TOML run files all read these classes. Each validates in
``__post_init__`` with :class:`~arctic_rts.errors.ConfigError` (a ``ValueError``), never ``assert``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from arctic_rts.bands import SCL_MASKED
from arctic_rts.errors import ConfigError

#: Earth Search v1, the default STAC API for users online.
EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
#: Microsoft Planetary Computer's STAC API (items need URL signing, see ``search_scenes``).
PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
#: The ``stac`` value that names the embedded demo catalog (generated on first use).
DEMO_CATALOG = "demo"
#: Key under an item's ``processing:software`` with which the demo generator marks its items.
DEMO_SOFTWARE = "arctic-rts-demo"


#: The first year with Sentinel-2 imagery (Sentinel-2A began acquiring in June 2015).
FIRST_YEAR = 2015


def validate_year(year: Any) -> int:
    """Check a year to map and return it as an ``int``: from 2015 to the current year + 1.

    Sentinel-2A began acquiring in June 2015 and the L2A collections of Earth Search and the
    Planetary Computer start in that year, so no earlier year can hold a scene. The upper bound
    is next year, not this one: a run file may be written for the coming thaw season, and a
    clock near New Year should not refuse it; anything later is a typo (``2201``) that would
    otherwise only end in an empty search. ``int`` and numpy integers are accepted; ``bool``,
    floats and strings are refused.

    Raises:
        ConfigError: Not a whole number, or outside 2015 .. current year + 1.
    """
    last = dt.date.today().year + 1
    try:
        if isinstance(year, bool):
            raise TypeError
        value = operator.index(year)
    except TypeError:
        raise ConfigError(f"year must be a whole year such as 2021, got {year!r}.") from None
    if not FIRST_YEAR <= value <= last:
        raise ConfigError(
            f"year must be a Sentinel-2 year from {FIRST_YEAR} (its first) to {last} (next "
            f"year), got {year!r}."
        )
    return value


#: What ``--year latest`` (:func:`latest_season_year`) means, in one sentence for help texts.
LATEST_RULE = (
    "latest = the last year whose season (the run's search months, June-August by default) "
    "ended before today (UTC): from September 1 this year, else last year"
)


def latest_season_year(months: tuple[int, ...] = (6, 7, 8), today: dt.date | None = None) -> int:
    """The last year whose mapping season is over: the year ``--year latest`` stands for.

    A season is over on the first day of the month after the last of ``months`` (September 1
    for June-August). Scenes reach the STAC APIs a few days after acquisition, so schedule a
    run a week or two later (the recipes in ``deploy/`` run on September 15).

    Args:
        months: The season's months (1-12), e.g. the run's ``SearchConfig.months``.
        today: The date to count from; None for today in UTC.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    last = max(months)
    ended = dt.date(today.year + 1, 1, 1) if last == 12 else dt.date(today.year, last + 1, 1)
    return today.year if today >= ended else today.year - 1


def parse_years(
    specs: str | list[str], months: tuple[int, ...] = (6, 7, 8), today: dt.date | None = None
) -> tuple[int, ...]:
    """Years from the command line: ``2017-2025``, ``2019,2021``, ``latest``, or several of these.

    Args:
        specs: One spec or a list of them (``--years 2017-2019 2021``); ``latest`` is
            :func:`latest_season_year` of ``months`` and ``today``.
        months: The season's months, for ``latest``.
        today: The date ``latest`` counts from; None for today in UTC.

    Returns the years sorted, without repeats, each checked by :func:`validate_year`.

    Raises:
        ConfigError: A spec that is not a year, a range or ``latest``, an empty range, or a
            year outside the Sentinel-2 years.
    """
    years: set[int] = set()
    for spec in [specs] if isinstance(specs, str) else specs:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if part.lower() == "latest":
                years.add(latest_season_year(months, today))
                continue
            first, sep, last = part.partition("-")
            try:
                lo, hi = (int(first), int(last)) if sep else (int(part), int(part))
            except ValueError:
                raise ConfigError(
                    f"years must look like 2021, 2017-2025, 2019,2021 or latest, got {part!r}."
                ) from None
            if lo > hi:
                raise ConfigError(
                    f"year range {part!r} is empty; write it first-last, e.g. 2017-2025."
                )
            years.update(validate_year(y) for y in (lo, hi))
            years.update(range(lo, hi + 1))
    if not years:
        raise ConfigError("no year given; write e.g. --years 2017-2025 or --year latest.")
    return tuple(sorted(years))


def validate_bbox(bbox: tuple[float, float, float, float] | list[float]) -> tuple[float, ...]:
    """Check a WGS84 ``(west, south, east, north)`` box and return it as a tuple of floats.

    ``west > east`` is a box that crosses the antimeridian (180 degrees), as in the STAC API and
    GeoJSON specifications: ``(179.5, 65, -179.5, 66)`` is one degree wide. See
    :func:`bbox_parts` for its two halves.
    """
    if len(bbox) != 4:
        raise ConfigError(f"bbox needs 4 numbers W S E N, got {len(bbox)}.")
    w, s, e, n = (float(v) for v in bbox)
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise ConfigError(
            f"bbox {w} {s} {e} {n} is outside longitude -180..180 / latitude -90..90."
        )
    if w == e or s >= n or (w, e) == (180.0, -180.0):
        raise ConfigError(
            f"bbox {w} {s} {e} {n} is empty: it needs west != east (west > east crosses the "
            "antimeridian) and south < north."
        )
    if w > e and e + 360.0 - w > 180.0:
        # Far more often swapped numbers than a box around most of the globe.
        raise ConfigError(
            f"bbox {w} {s} {e} {n}: west > east makes a box across the antimeridian (180 "
            f"degrees), {e + 360.0 - w:g} degrees wide here; give west < east, or west > east "
            "only for a box across 180 (at most 180 degrees wide)."
        )
    return (w, s, e, n)


def bbox_parts(bbox: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """The box itself, or its halves west and east of 180 degrees when it crosses it (a box
    that starts or ends on 180 has one: the other would be empty)."""
    w, s, e, n = (float(v) for v in bbox)
    if w <= e:
        return [(w, s, e, n)]
    return [p for p in ((w, s, 180.0, n), (-180.0, s, e, n)) if p[0] < p[2]]


def bbox_geometry(bbox: Sequence[float], densify: float | None = None) -> Any:
    """A box as a shapely (Multi)Polygon in lon/lat, split at 180 degrees when it crosses it.

    ``densify`` (degrees) adds vertices so the box keeps its shape when reprojected.
    """
    import shapely

    boxes = [shapely.box(*part) for part in bbox_parts(bbox)]
    if densify:
        boxes = [shapely.segmentize(b, densify) for b in boxes]
    return boxes[0] if len(boxes) == 1 else shapely.MultiPolygon(boxes)


def wrap_longitude(lon: float) -> float:
    """A longitude in -180..180 (180 stays 180)."""
    return lon if -180.0 <= lon <= 180.0 else (lon + 180.0) % 360.0 - 180.0


def geometry_bbox(geom: Any) -> tuple[float, float, float, float]:
    """The smallest lon/lat box around a geometry, crossing 180 degrees when that is smaller.

    A geometry whose parts lie on both sides of the antimeridian (an inventory from -177.9 to
    179.99, a region split at 180) gets ``west > east`` rather than a box around the globe:
    the widest gap between the parts' longitude ranges is left out.
    """
    import shapely

    parts = shapely.get_parts(geom)
    bounds = shapely.bounds(parts)
    w, s = float(bounds[:, 0].min()), float(bounds[:, 1].min())
    e, n = float(bounds[:, 2].max()), float(bounds[:, 3].max())
    if e - w <= 180.0:
        return (w, s, e, n)
    spans = sorted((float(a), float(b)) for a, b in zip(bounds[:, 0], bounds[:, 2], strict=True))
    merged: list[list[float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    # The gap across 180 (from the last range's east to the first range's west) is the box
    # around the globe's way of leaving space; any larger gap inside makes a crossing box.
    if len(merged) == 1:
        return (w, s, e, n)
    wrap_gap = merged[0][0] + 360.0 - merged[-1][1]
    gap, i = max((merged[k + 1][0] - merged[k][1], k) for k in range(len(merged) - 1))
    if gap <= wrap_gap:
        return (w, s, e, n)
    return (merged[i + 1][0], s, merged[i][1], n)


@dataclass(frozen=True)
class SearchConfig:
    """How scenes are searched and selected."""

    #: STAC collection id of Sentinel-2 L2A on the API.
    collection: str = "sentinel-2-l2a"
    #: Months (1-12) that count as the snow-free season; June-August by default.
    months: tuple[int, ...] = (6, 7, 8)
    #: Largest scene-wide cloud cover in percent (``eo:cloud_cover``) a scene may have.
    max_cloud_cover: float = 60.0
    #: Upper bound on items fetched per search (protects against runaway queries).
    max_items: int = 2000
    #: Largest area in km2 (geodesic) the command line maps without ``--yes``: a guard
    #: against starting hours of work by a typo; about four MGRS tiles of 110 x 110 km.
    max_area_km2: float = 50_000.0

    def __post_init__(self) -> None:
        if not self.max_area_km2 > 0:
            raise ConfigError(f"max_area_km2 must be > 0, got {self.max_area_km2}.")
        if not self.months or any(not 1 <= m <= 12 for m in self.months):
            raise ConfigError(f"months must be numbers 1-12, got {list(self.months)}.")
        if not 0 <= self.max_cloud_cover <= 100:
            raise ConfigError(f"max_cloud_cover must be 0-100 %, got {self.max_cloud_cover}.")
        if self.max_items < 1:
            raise ConfigError(f"max_items must be positive, got {self.max_items}.")


@dataclass(frozen=True)
class NetworkConfig:
    """Timeouts and retries of every STAC request and remote COG read (see arctic_rts.net)."""

    #: Seconds to wait for a connection to a STAC API or a COG server.
    connect_timeout_s: float = 10.0
    #: Seconds to wait for the next bytes of an answer (STAC); for a COG, the whole request.
    read_timeout_s: float = 60.0
    #: Retries of a STAC request after a 429, a 5xx, a reset, a timeout or a truncated answer
    #: (and GDAL's retries of a COG request after 429 or 5xx).
    max_retries: int = 5
    #: First wait before a retry, in seconds; doubled on each retry (full jitter), at most
    #: ``max_backoff_s``. A ``Retry-After`` the server sends is waited instead.
    backoff_s: float = 1.0
    #: Longest single wait between tries, in seconds.
    max_backoff_s: float = 30.0
    #: Seconds one STAC request may spend over its tries and waits: no wait that would pass
    #: it begins (a try under way still runs to its timeouts), and the request fails.
    retry_total_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "read_timeout_s", "retry_total_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds.")
        if not 0 <= self.backoff_s <= self.max_backoff_s:
            raise ConfigError("backoff_s must be 0 or more and at most max_backoff_s.")
        if not 0 <= self.max_retries <= 100:
            raise ConfigError(f"max_retries must be 0-100, got {self.max_retries}.")


#: The readers :class:`LoadConfig` can use.
LOADERS = ("stackstac", "odc-stac")


@dataclass(frozen=True)
class LoadConfig:
    """How scenes become a lazy array."""

    #: Output pixel size in metres (the model's resolution: 10 m).
    resolution: float = 10.0
    #: Dask chunk edge in pixels for reading.
    chunksize: int = 2048
    #: SCL classes masked as invalid (clouds, shadows, snow, nodata...).
    masked_scl_classes: tuple[int, ...] = SCL_MASKED
    #: SCL classes whose pixels get slump probability 0 after prediction, e.g. ``(6,)`` for
    #: water (off by default: SCL water is unmeasured here, and thaw slumps line lake shores
    #: and coasts, where a water class that spills onto land would cut them).
    water_scl_classes: tuple[int, ...] = ()
    #: The library that reads the COGs: "stackstac" (default) or "odc-stac" (the ``odc``
    #: extra); both give the same arrays on the same grid.
    loader: str = "stackstac"
    #: Local folders that asset hrefs may point into besides a local catalog's own folder
    #: (relative paths: to the current folder; in a run file, to its folder); see
    #: :mod:`arctic_rts.asset_checks`.
    asset_roots: tuple[str, ...] = ()
    #: Hosts that http(s) asset hrefs may name (``.example.com``: its subdomains); empty: any.
    asset_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(not h or "/" in h or ":" in h for h in self.asset_hosts):
            raise ConfigError(
                "asset_hosts must be host names (example.org, .example.org), got "
                f"{list(self.asset_hosts)}."
            )
        if self.resolution <= 0:
            raise ConfigError(f"resolution must be positive, got {self.resolution}.")
        if self.chunksize < 64:
            raise ConfigError(f"chunksize must be at least 64 pixels, got {self.chunksize}.")
        if self.loader not in LOADERS:
            raise ConfigError(f"loader must be one of {', '.join(LOADERS)}, got {self.loader!r}.")
        for name in ("masked_scl_classes", "water_scl_classes"):
            bad = [c for c in getattr(self, name) if not 0 <= int(c) <= 11]
            if bad:
                raise ConfigError(f"{name} are SCL classes 0-11, got {bad}.")


#: Forward-pass arithmetic :class:`PredictConfig` accepts.
PRECISIONS = ("auto", "fp32", "bf16")
#: Runners of the forward pass (:mod:`arctic_rts.model.runners`; all but torch optional, CPU, fp32).
BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class PredictConfig:
    """How the model runs over a scene."""

    #: Core tile edge in pixels (a multiple of 16); each tile is read with ``halo`` around it.
    #: 1024 by measurement (``bench/inference.py``, ``tiles`` and memory rows of
    #: BENCHMARKS.md): larger tiles waste less of each window on halos, but the forward rate
    #: varies more between sizes and runs than that saves, while a window's activations grow
    #: with its area for every model task a worker runs at once; 1024 keeps a 1-thread
    #: worker's peak modest.
    tile_size: int = 1024
    #: Context in pixels added on every side of a tile (a multiple of 16). ``None``: the halo
    #: measured for the weights (the card's ``halo``, written by ``arctic-rts train`` with
    #: :func:`arctic_rts.model.halo.measure_halo`), else 128, which makes tiled output equal
    #: whole-scene output for any UNet with 4 poolings (DESIGN.md).
    halo: int | None = None
    #: Tiles per forward pass. 1 by measurement: on CPU two 1088^2 windows per pass run no
    #: faster per pixel than one and need twice the activations (``bench/inference.py``).
    batch_size: int = 1
    #: Test-time augmentation: mean over the 8 flips/rotations.
    tta: bool = False
    #: "auto" (CUDA when available), "cpu" or "cuda[:N]".
    device: str = "auto"
    #: Arithmetic of the forward pass: "fp32", "bf16" (autocast; convolutions in bfloat16,
    #: probabilities still float32) or "auto" (bf16 on GPUs, fp32 on CPUs).
    precision: str = "auto"
    #: Forward-pass runner: "torch", or "onnxruntime" (the onnx extra; CPU, fp32 only).
    backend: str = "torch"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}."
            )
        if self.backend not in BACKENDS or (self.backend != "torch" and self.precision == "bf16"):
            raise ConfigError(
                f"backend must be one of {', '.join(BACKENDS)} (all but torch run fp32), got "
                f"{self.backend!r} with precision {self.precision!r}."
            )
        if self.tile_size < 16 or self.tile_size % 16:
            raise ConfigError(f"tile_size must be a positive multiple of 16, got {self.tile_size}.")
        if self.halo is not None and (self.halo < 0 or self.halo % 16):
            raise ConfigError(f"halo must be a non-negative multiple of 16, got {self.halo}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")


#: Minimum polygon area (m2) where neither the user nor the model card names one: 0.2 ha, about
#: the smallest slump a 10 m mapping resolves as a shape.
DEFAULT_MIN_AREA_M2 = 2000.0


@dataclass(frozen=True)
class VectorizeConfig:
    """How probabilities become polygons."""

    #: Probability threshold; None takes the model card's.
    threshold: float | None = None
    #: Polygons smaller than this (m2) are dropped; None takes the model card's ``min_area_m2``
    #: (chosen by cross-validation), else :data:`DEFAULT_MIN_AREA_M2`.
    min_area_m2: float | None = None
    #: Equal-area CRS for areas (perimeters are geodesic, on the WGS84 ellipsoid).
    area_crs: str = "EPSG:6931"
    #: Radius in pixels of a morphological opening of the mask before labelling (0: none);
    #: None takes the model card's ``opening_px`` (chosen by cross-validation), else 0.
    opening_px: int | None = None
    #: Probability hysteresis: pixels at or above this lower cut join an object when they
    #: connect to a pixel at or above the threshold (0: off); None takes the card's, else off.
    hysteresis_low: float | None = None
    #: Pixel connectivity of one object: 8 (diagonal neighbours join) or 4.
    connectivity: int = 8

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must lie strictly between 0 and 1, got {self.threshold}.")
        if self.min_area_m2 is not None and self.min_area_m2 < 0:
            raise ConfigError(f"min_area_m2 must be >= 0, got {self.min_area_m2}.")
        if self.opening_px is not None and self.opening_px < 0:
            raise ConfigError(f"opening_px must be >= 0 (0 turns it off), got {self.opening_px}.")
        if self.hysteresis_low is not None and not 0 <= self.hysteresis_low < 1:
            raise ConfigError(
                f"hysteresis_low must lie in [0, 1) (0 turns it off), got {self.hysteresis_low}."
            )
        if self.connectivity not in (4, 8):
            raise ConfigError(f"connectivity must be 4 or 8, got {self.connectivity}.")

    def for_model(
        self,
        threshold: float,
        min_area_m2: float | None,
        opening_px: int | None = None,
        hysteresis_low: float | None = None,
    ) -> VectorizeConfig:
        """This config with a model card's post-processing where it leaves a setting open."""
        area = self.min_area_m2 if self.min_area_m2 is not None else min_area_m2
        opening = self.opening_px if self.opening_px is not None else opening_px
        low = self.hysteresis_low if self.hysteresis_low is not None else hysteresis_low
        return dataclasses.replace(
            self,
            threshold=self.threshold if self.threshold is not None else threshold,
            min_area_m2=area if area is not None else DEFAULT_MIN_AREA_M2,
            opening_px=opening or 0,
            hysteresis_low=low or 0.0,
        )


@dataclass(frozen=True)
class InventoryConfig:
    """How polygons are merged and written."""

    #: CRS of the GeoPackage (NSIDC Sea Ice Polar Stereographic North by default).
    crs: str = "EPSG:3413"
    #: Two polygons are one slump when their intersection covers at least this share of the
    #: smaller one (scenes that overlap when merging; consecutive years in the change layer).
    min_overlap: float = 0.5
    #: A slump grew or shrank when its area changed by more than this share of its area...
    change_rel_threshold: float = 0.10
    #: ...and by more than a ring this many pixels wide around it (perimeter x pixels x size).
    change_ring_px: float = 1.0
    #: Drop slumps that no scene saw whole (every view touches nodata, cloud or the scene's
    #: edge): their outlines are cut. Off by default: they are real detections, flagged with
    #: ``touches_invalid``, and no labelled data here measures what dropping them does.
    drop_cut: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.min_overlap <= 1:
            raise ConfigError(f"min_overlap must lie in (0, 1], got {self.min_overlap}.")
        if self.change_rel_threshold < 0:
            raise ConfigError(
                f"change_rel_threshold must be >= 0, got {self.change_rel_threshold}."
            )
        if self.change_ring_px < 0:
            raise ConfigError(f"change_ring_px must be >= 0, got {self.change_ring_px}.")


@dataclass(frozen=True)
class ClusterConfig:
    """Which Dask cluster runs the work."""

    #: Address of an existing scheduler (``tcp://host:8786``); None starts a local cluster.
    scheduler: str | None = None
    #: Local worker processes (None: one per GPU, or one per 2 cores on CPU).
    n_workers: int | None = None
    #: Threads per local worker (None: the cores shared out over the workers). Threads that
    #: no model task holds read and vectorise, on GPU and CPU workers alike.
    threads_per_worker: int | None = None
    #: Model tasks that run at once in one local CPU worker, each on the worker's cores shared
    #: out over them (None: one per thread, each on its share). The default, one at a time on
    #: all of the worker's cores as on a GPU, holds one window's activations per worker
    #: instead of one per thread; on 2 cores a full tile's map run took about 5 % longer than
    #: with two tasks side by side and its worker peaked 21 % lower (BENCHMARKS.md, map run
    #: memory). A model task waiting for its turn holds a thread, so with many threads per
    #: worker raise this too. Workers of an existing scheduler read ``ARCTIC_RTS_MODEL_TASKS``.
    model_tasks_per_worker: int | None = 1
    #: Use GPUs (LocalCUDACluster from the ``gpu`` extra) when visible: "auto", "yes", "no".
    gpu: str = "auto"
    #: Torch (intra-op) threads per model task in local workers; None shares this host's cores
    #: out over the model tasks that run at once (at least 1). Workers of an existing
    #: scheduler read the ``ARCTIC_RTS_TORCH_THREADS`` environment variable instead.
    torch_threads: int | None = None
    #: Memory allocator of local workers: "auto" (mimalloc where the ``cmeel-mimalloc`` wheel
    #: is installed, a dependency on Linux; else glibc), "mimalloc" or "glibc" (its malloc
    #: tuned). With mimalloc a worker's peak memory stayed flat over scene sizes where glibc's
    #: heap grew (BENCHMARKS.md, ``arctic_rts.cluster.worker_allocator``).
    allocator: str = "auto"
    #: Memory limit of each local worker: a size ("4GiB"), a share of this host's memory
    #: (0.5), or "auto" (the memory shared out over the workers). Its nanny restarts a worker
    #: that passes 95 % of it (README, "Worker memory").
    memory_limit: str | float = "auto"
    #: Deaths of workers running one task before that task (its scene) fails with
    #: ``KilledWorker``: a local scheduler's ``distributed.scheduler.allowed-failures``.
    allowed_failures: int = 3
    #: Scenes of a run whose graphs are on the cluster at once. None: one more than the
    #: cluster's workers (at least 2), so a worker that finishes its share of one scene finds
    #: the next scene's tasks waiting instead of idling. Each scene in flight costs the
    #: scheduler its graph and the workers what they have read of it, so it is bounded.
    scenes_in_flight: int | None = None

    def __post_init__(self) -> None:
        if self.scenes_in_flight is not None and self.scenes_in_flight < 1:
            raise ConfigError(f"scenes_in_flight must be at least 1, got {self.scenes_in_flight}.")
        if self.gpu not in ("auto", "yes", "no"):
            raise ConfigError(f"gpu must be 'auto', 'yes' or 'no', got {self.gpu!r}.")
        if self.allocator not in ("auto", "glibc", "mimalloc"):
            raise ConfigError(
                f"allocator must be 'auto', 'glibc' or 'mimalloc', got {self.allocator!r}."
            )
        if self.n_workers is not None and self.n_workers < 1:
            raise ConfigError(f"n_workers must be at least 1, got {self.n_workers}.")
        if self.model_tasks_per_worker is not None and self.model_tasks_per_worker < 1:
            raise ConfigError(
                f"model_tasks_per_worker must be at least 1, got {self.model_tasks_per_worker}."
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"torch_threads must be at least 1, got {self.torch_threads}.")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ConfigError(
                f"threads_per_worker must be at least 1, got {self.threads_per_worker}."
            )
        if self.allowed_failures < 0:
            raise ConfigError(f"allowed_failures must be 0 or more, got {self.allowed_failures}.")
        limit = self.memory_limit
        try:
            from dask.utils import parse_bytes

            ok = limit == "auto" or (parse_bytes(limit) if isinstance(limit, str) else limit) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok or isinstance(limit, bool):
            raise ConfigError(
                f"memory_limit must be a size ('4GiB'), a share (0.5) or 'auto', not {limit!r}."
            )


@dataclass(frozen=True)
class MapConfig:
    """Everything one ``arctic-rts map`` run needs besides bbox, year and paths."""

    search: SearchConfig = field(default_factory=SearchConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    vectorize: VectorizeConfig = field(default_factory=VectorizeConfig)
    inventory: InventoryConfig = field(default_factory=InventoryConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    #: Map real scenes with a model trained on generated demo scenes (for tests only: such a
    #: model is refused on real imagery otherwise).
    allow_demo_model: bool = False
    #: Metres mapped beyond a map area (``map --bbox``, inventory regions) and the model's
    #: halo, so that a slump reaching out of the area is seen whole (its representative point
    #: decides whether it is kept).
    area_margin_m: float = 1000.0

    def __post_init__(self) -> None:
        if not self.area_margin_m >= 0:
            raise ConfigError(f"area_margin_m must be >= 0 metres, got {self.area_margin_m}.")


# --- yearly inventory runs (arctic_rts.inventory_run.run_inventory) -------------------------

#: Exports an inventory run can write beside its GeoPackage (``exports = [...]`` in the file).
INVENTORY_EXPORTS: tuple[str, ...] = ("geoparquet", "summary_csv")
#: Tables of an inventory run file that fill :class:`MapConfig`'s sections.
MAP_SECTIONS = {
    "search": SearchConfig,
    "load": LoadConfig,
    "predict": PredictConfig,
    "vectorize": VectorizeConfig,
    "inventory": InventoryConfig,
    "cluster": ClusterConfig,
    "network": NetworkConfig,
}


@dataclass(frozen=True)
class RegionConfig:
    """One named region of an inventory run, as a WGS84 box."""

    #: Region name (the summary CSV's ``region`` column); unique within a run.
    name: str
    #: ``(west, south, east, north)`` in degrees.
    bbox: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise ConfigError("every region needs a non-empty name.")
        object.__setattr__(self, "bbox", validate_bbox(list(self.bbox)))


@dataclass(frozen=True)
class InventoryRunConfig:
    """One scheduled inventory (``arctic-rts inventory run FILE.toml``): regions x years.

    Paths are taken as given here; :func:`read_inventory_run` makes a run file's relative paths
    relative to that file.
    """

    #: The inventory GeoPackage; its work folder (manifest of finished scenes) is ``<out>.work``.
    out: str
    #: Years to map, strictly increasing; a change layer is written for each consecutive pair.
    years: tuple[int, ...]
    #: Regions as named boxes (``[[regions]]`` tables) ...
    regions: tuple[RegionConfig, ...] = ()
    #: ... or a vector file of region polygons (``regions = "file.gpkg"``); each polygon's
    #: bounds are searched.
    regions_file: str | None = None
    #: Column of ``regions_file`` holding region names.
    name_column: str = "name"
    #: STAC API URL, ``"demo"``, a local item folder / stac-geoparquet file, or None (Earth Search).
    stac: str | None = None
    #: Weights files (several: an ensemble, probabilities averaged); empty: the bundled model.
    weights: tuple[str, ...] = ()
    #: Map only the pixels over the regions (plus the model's halo and ``area_margin_m``, so
    #: slumps at an edge are seen whole) and keep the slumps whose representative point lies
    #: inside a region: the rule ``map --bbox`` applies. False maps the selected scenes whole
    #: and keeps everything they show (MGRS tiles reach far beyond small regions).
    clip_to_regions: bool = True
    #: Extra outputs beside the GeoPackage: any of :data:`INVENTORY_EXPORTS`.
    exports: tuple[str, ...] = ()
    #: Replace year layers that another command (``arctic-rts map``) wrote into ``out``.
    overwrite: bool = False
    #: Stage parameters (tables ``[search]``, ``[load]``, ``[predict]``, ``[vectorize]``,
    #: ``[inventory]``, ``[cluster]`` of the run file).
    map: MapConfig = field(default_factory=MapConfig)

    def __post_init__(self) -> None:
        if not str(self.out).strip():
            raise ConfigError("out must name the inventory GeoPackage, e.g. out = 'rts.gpkg'.")
        if not self.years:
            raise ConfigError("years must name at least one year, e.g. years = [2021].")
        years = tuple(validate_year(y) for y in self.years)
        if any(b <= a for a, b in itertools.pairwise(years)):
            raise ConfigError(f"years must be strictly increasing, got {list(years)}.")
        object.__setattr__(self, "years", years)
        if bool(self.regions) == (self.regions_file is not None):
            raise ConfigError(
                "give the regions either as [[regions]] tables (name, bbox) or as "
                "regions = 'file.gpkg', exactly one of the two."
            )
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ConfigError(f"region names must be unique, got {names}.")
        unknown = sorted(set(self.exports) - set(INVENTORY_EXPORTS))
        if unknown:
            raise ConfigError(
                f"unknown export(s) {unknown}; choose from {list(INVENTORY_EXPORTS)}."
            )
