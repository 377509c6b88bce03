"""Parameters of every stage as small frozen dataclasses: the one copy of each default.

The library, the CLI and TOML run files all read these classes. Each validates in
``__post_init__`` with :class:`~arctic_rts.errors.ConfigError` (a ``ValueError``), never ``assert``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arctic_rts.bands import SCL_MASKED
from arctic_rts.errors import ConfigError

#: Earth Search v1, the default STAC API for users online.
EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
#: Microsoft Planetary Computer's STAC API (items need URL signing, see ``search_scenes``).
PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"


def validate_bbox(bbox: tuple[float, float, float, float] | list[float]) -> tuple[float, ...]:
    """Check a WGS84 ``(west, south, east, north)`` box and return it as a tuple of floats."""
    if len(bbox) != 4:
        raise ConfigError(f"bbox needs 4 numbers W S E N, got {len(bbox)}.")
    w, s, e, n = (float(v) for v in bbox)
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise ConfigError(f"bbox {w} {s} {e} {n} is outside longitude -180..180 / latitude -90..90.")
    if w >= e or s >= n:
        raise ConfigError(f"bbox {w} {s} {e} {n} is empty: it needs west < east and south < north.")
    return (w, s, e, n)


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

    def __post_init__(self) -> None:
        if not self.months or any(not 1 <= m <= 12 for m in self.months):
            raise ConfigError(f"months must be numbers 1-12, got {list(self.months)}.")
        if not 0 <= self.max_cloud_cover <= 100:
            raise ConfigError(f"max_cloud_cover must be 0-100 %, got {self.max_cloud_cover}.")
        if self.max_items < 1:
            raise ConfigError(f"max_items must be positive, got {self.max_items}.")


@dataclass(frozen=True)
class LoadConfig:
    """How scenes become a lazy array."""

    #: Output pixel size in metres (the model's resolution: 10 m).
    resolution: float = 10.0
    #: Dask chunk edge in pixels for reading.
    chunksize: int = 2048
    #: SCL classes masked as invalid (clouds, shadows, snow, nodata...).
    masked_scl_classes: tuple[int, ...] = SCL_MASKED

    def __post_init__(self) -> None:
        if self.resolution <= 0:
            raise ConfigError(f"resolution must be positive, got {self.resolution}.")
        if self.chunksize < 64:
            raise ConfigError(f"chunksize must be at least 64 pixels, got {self.chunksize}.")


@dataclass(frozen=True)
class PredictConfig:
    """How the model runs over a scene."""

    #: Core tile edge in pixels (a multiple of 16); each tile is read with ``halo`` around it.
    tile_size: int = 1024
    #: Context in pixels added on every side of a tile; >= 128 makes tiled output equal
    #: whole-scene output for the paper's UNet (4 poolings), see DESIGN.md.
    halo: int = 128
    #: Tiles per forward pass.
    batch_size: int = 1
    #: Test-time augmentation: mean over the 8 flips/rotations.
    tta: bool = False
    #: "auto" (CUDA when available), "cpu" or "cuda[:N]".
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.tile_size < 16 or self.tile_size % 16:
            raise ConfigError(f"tile_size must be a positive multiple of 16, got {self.tile_size}.")
        if self.halo < 0 or self.halo % 16:
            raise ConfigError(f"halo must be a non-negative multiple of 16, got {self.halo}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")


@dataclass(frozen=True)
class VectorizeConfig:
    """How probabilities become polygons."""

    #: Probability threshold; None takes the model card's.
    threshold: float | None = None
    #: Polygons smaller than this (m2) are dropped (0.3 ha is the smallest slump of interest).
    min_area_m2: float = 2000.0
    #: Equal-area CRS for areas and perimeters.
    area_crs: str = "EPSG:6931"

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must lie strictly between 0 and 1, got {self.threshold}.")
        if self.min_area_m2 < 0:
            raise ConfigError(f"min_area_m2 must be >= 0, got {self.min_area_m2}.")


@dataclass(frozen=True)
class InventoryConfig:
    """How polygons are merged and written."""

    #: CRS of the GeoPackage (NSIDC Sea Ice Polar Stereographic North by default).
    crs: str = "EPSG:3413"


@dataclass(frozen=True)
class ClusterConfig:
    """Which Dask cluster runs the work."""

    #: Address of an existing scheduler (``tcp://host:8786``); None starts a local cluster.
    scheduler: str | None = None
    #: Local worker processes (None: one per GPU, or one per 2 cores on CPU).
    n_workers: int | None = None
    #: Threads per local worker.
    threads_per_worker: int = 1
    #: Use GPUs (LocalCUDACluster from the ``gpu`` extra) when visible: "auto", "yes", "no".
    gpu: str = "auto"

    def __post_init__(self) -> None:
        if self.gpu not in ("auto", "yes", "no"):
            raise ConfigError(f"gpu must be 'auto', 'yes' or 'no', got {self.gpu!r}.")
        if self.n_workers is not None and self.n_workers < 1:
            raise ConfigError(f"n_workers must be at least 1, got {self.n_workers}.")


@dataclass(frozen=True)
class MapConfig:
    """Everything one ``arctic-rts map`` run needs besides bbox, year and paths."""

    search: SearchConfig = field(default_factory=SearchConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    vectorize: VectorizeConfig = field(default_factory=VectorizeConfig)
    inventory: InventoryConfig = field(default_factory=InventoryConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
