"""Synthetic Sentinel-2 L2A scenes of Arctic tundra with thaw slumps, for the offline demo.

``generate_demo`` writes a small, self-contained catalog that looks to the pipeline like Earth
Search v1 ``sentinel-2-l2a``: per scene the 12 L2A bands at their native 10/20/60 m grids plus SCL
as Cloud-Optimized GeoTIFFs (uint16 DN, reflectance = DN * 0.0001 - 0.1), one STAC item JSON per
scene, a DEM and the ground-truth slump polygons. ``run_demo`` maps such a catalog and scores the
map, and the best single-band threshold (``single_band_baseline``), against the truth.

The landscape sits on the Yukon coastal plain at the UTM zone 7/8 boundary (138 W, 69 N), a real
thaw-slump region, and is seen by two overlapping MGRS tiles in different UTM zones, on several
summer dates (one clearly least cloudy, never perfectly clear) and on out-of-season snow dates
that a season filter must reject.

Why it is built the way it is (so a demo score means something):

* Slumps are horseshoe scars of wet bare mud on valley slopes, opening downslope, with a bright
  headwall rim and a darker flow lobe; 0.3-40 ha, most of them a few hectares.
* Every single band is ambiguous: wet riverbanks share the slump spectrum, gravel bars and flat
  bare soil patches are drier variants, lichen heath is as red as a slump, water is as dark in NIR,
  melting snow patches on the same slopes leave wet soil fringes, and thin cloud edges and shadow
  edges (not flagged in SCL, as with Sen2Cor) shift every band. Only spectrum *and* shape and
  context together single slumps out.
* Illumination (sun elevation, terrain shading, haze) and phenology (greenness) vary by date.

Independent scenes for training come from another ``seed``: the same two tiles and dates, but
new terrain, slump layout, look-alikes and clouds. The bundled demo weights must be trained on
seeds other than :data:`DEMO_SEED`.

All randomness flows from one ``numpy`` generator per component, so the same seed gives
byte-identical rasters.

The parts, each importing only those listed before it:

* ``manifest``: :class:`DemoCatalog`, the parameters and the manifest that marks a catalog done.
* ``grid``: the MGRS tiles, their grids, transforms between grids, the acquisition plan.
* ``slumps``: slump outlines, their placement, their state per year.
* ``landscape``: terrain, water, land cover and look-alikes; endmember weights per tile.
* ``radiometry``: reflectance, illumination, clouds and shadows, SCL, DN.
* ``items``: COGs, STAC item dicts, the truth GeoPackage and the DEM.
* ``generate``: :func:`generate_demo`, the atomic, locked write of a whole catalog.
* ``baseline``: scoring against the truth and the single-band threshold baseline.
* ``run``: :func:`run_demo`, the offline demo run (uses the pipeline; nothing below imports it).
"""

from __future__ import annotations

from arctic_rts.demo.baseline import (
    BaselineResult,
    score_against_truth,
    single_band_baseline,
    visible_truth,
)
from arctic_rts.demo.generate import generate_demo
from arctic_rts.demo.manifest import DEFAULT_SIZE_PX, DEMO_SEED, GENERATOR_VERSION, DemoCatalog
from arctic_rts.demo.run import DEFAULT_DEMO_ROOT, run_demo

__all__ = [
    "DEFAULT_DEMO_ROOT",
    "DEFAULT_SIZE_PX",
    "DEMO_SEED",
    "GENERATOR_VERSION",
    "BaselineResult",
    "DemoCatalog",
    "generate_demo",
    "run_demo",
    "score_against_truth",
    "single_band_baseline",
    "visible_truth",
]
