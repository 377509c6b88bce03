# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # arctic-rts quickstart: map thaw slumps stage by stage
#
# This notebook walks through the whole mapping flow of **arctic-rts**, one public function per
# stage, on a small *synthetic* Sentinel-2 L2A catalog that is generated on your machine: no
# internet, no account, about a minute on a laptop.
#
# ```
# bbox, year ─► search ─► select ─► load ─► predict ─► vectorize ─► merge ─► GeoPackage
# ```
#
# Every stage takes and returns plain, well-known types (STAC item dicts, lazy `xarray`
# arrays, `geopandas` frames), so you can stop at any step, look at the data and carry on with
# your own tools. At the end you will see how to run the same thing in one call
# (`map_region`, or `arctic-rts map` in a shell) and how to point it at real imagery on
# Earth Search.

# %%
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pyogrio
import torch

import arctic_rts
from arctic_rts.catalog import serve_catalog
from arctic_rts.config import EARTH_SEARCH_URL, PredictConfig
from arctic_rts.demo import generate_demo
from arctic_rts.inventory import read_inventory, write_inventory
from arctic_rts.load import load_scenes
from arctic_rts.merge import merge_polygons
from arctic_rts.metrics import match_objects
from arctic_rts.model import UNet, resolve_weights, save_weights
from arctic_rts.model.weights import bundled_weights
from arctic_rts.predict import predict
from arctic_rts.search import search_scenes, select_scenes
from arctic_rts.vectorize import vectorize

# Everything this notebook writes goes into one folder beside it (ignored by git).
WORK = Path("demo-out") / "quickstart"
WORK.mkdir(parents=True, exist_ok=True)
YEAR = 2021
print("arctic-rts", arctic_rts.__version__, "- writing to", WORK.resolve())

# %% [markdown]
# ## 1. A demo catalog
#
# `generate_demo` writes synthetic Sentinel-2 L2A scenes of tundra with thaw slumps on the
# Yukon coastal plain, where UTM zones 7 and 8 meet: Cloud-Optimized GeoTIFFs for the 12 L2A
# bands plus the SCL cloud mask, one STAC item JSON per scene in the schema of Earth Search v1
# (asset keys `red`, `nir`, ...), a DEM and the true slump outlines. Two MGRS tiles (one per
# UTM zone) see the area on several dates: summer scenes with varying cloud, plus clearer
# May and October scenes with snow, which a season filter must reject.
#
# `size_px=180` keeps the scenes tiny (1.8 km); the default is 1008 px. Running the cell again
# reuses the catalog.

# %%
catalog = generate_demo(WORK / "catalog", size_px=180)
print("bbox (W, S, E, N):", catalog.bbox)
print("MGRS tiles       :", catalog.tiles)
print("scenes           :", len(catalog.item_paths), "item JSON files in", catalog.items_dir)

# %% [markdown]
# ## 2. A STAC API
#
# The pipeline talks to a STAC API, the way it talks to Earth Search or Planetary Computer.
# `serve_catalog` starts the embedded API (rustac) on `127.0.0.1` over the folder of item
# files and stops it when the `with` block (here the `ExitStack`) closes.
#
# **Real imagery:** skip this cell and use `stac_url = EARTH_SEARCH_URL`
# (`https://earth-search.aws.element84.com/v1`); everything below stays the same.

# %%
stack = ExitStack()
stac_url = stack.enter_context(serve_catalog(catalog.items_dir))
print("local STAC API at", stac_url, "| Earth Search would be", EARTH_SEARCH_URL)

# %% [markdown]
# ## 3. Search and select scenes
#
# `search_scenes` asks the API for the season's scenes (June to August by default, cloud cover
# up to 60 %) over the bbox and returns normalised item dicts: asset keys are canonical band
# names (`B04`, not `red`), hrefs are absolute and every band says how to turn digital
# numbers into reflectance. `select_scenes` keeps the least cloudy scene of each MGRS tile.

# %%
items = search_scenes(catalog.bbox, YEAR, stac_url=stac_url)
selected = select_scenes(items)
chosen = {it["id"] for it in selected}
pd.DataFrame(
    [
        {
            "id": it["id"],
            "tile": it["properties"]["s2:mgrs_tile"],
            "date": it["properties"]["datetime"][:10],
            "cloud %": round(it["properties"]["eo:cloud_cover"], 1),
            "selected": it["id"] in chosen,
        }
        for it in items
    ]
)

# %% [markdown]
# ## 4. A model
#
# A model is a `.safetensors` file with a JSON *card* beside it: the bands it expects (in
# order), their normalisation, the default probability threshold and how it was trained.
# Loading checks the card against the imagery and refuses a mismatch; pickled PyTorch files
# (`.pt`) are refused, because unpickling can run code. `resolve_weights` reads the card once
# and returns the run's model identity (`Weights`): its bands, threshold and halo, and the
# small picklable references that travel to the workers instead of the network.
#
# The cell below takes the demo weights bundled with the package when they are installed.
# **If they are not, it makes a randomly initialised UNet**: everything runs the same way, but
# its polygons are noise, so read the numbers below as a tour of the outputs, not as a result.
# Train your own weights with `arctic-rts train` (PixelDINO and baselines).

# %%
weights = bundled_weights()
if weights.is_file():
    print("using the bundled demo weights:", weights.name)
else:
    print("no bundled weights installed: using a RANDOMLY INITIALISED UNet (outputs are noise)")
    bands = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    weights = WORK / "random_unet.safetensors"
    torch.manual_seed(0)  # the same noise on every run
    save_weights(
        UNet(len(bands)),
        {
            "bands": bands,
            "normalisation": {"mean": [0.1] * len(bands), "std": [0.05] * len(bands)},
            "threshold": 0.5,
            "training": {"method": "none (random initialisation, quickstart only)"},
        },
        weights,
    )
model = resolve_weights(weights)  # the card, read once; references, not the network
print("bands    :", model.bands)
print("threshold:", model.threshold)

# %% [markdown]
# ## 5. Load the scenes, lazily
#
# `load_scenes` returns one dask-backed `xarray.DataArray` per scene, on that scene's own UTM
# grid, with the bands in the card's order, as float32 surface reflectance and NaN where the
# SCL mask says cloud, shadow, snow or no data. **No pixel is read yet**: the repr below shows
# the chunks of a lazy array. Pixels are read only by `.compute()` (here: inside step 7).

# %%
scenes = load_scenes(selected, model.bands)
scenes[0]

# %% [markdown]
# ## 6. Predict
#
# `predict` runs the model over a scene in overlapping tiles (through dask's `map_overlap`) and
# blends them, so the result equals running it on the whole scene at once. It is lazy too. For
# large areas, start a Dask cluster first and the same calls run on its workers, each loading
# the model once:
#
# ```python
# from arctic_rts.cluster import connect
# client = connect()          # local worker processes; or ClusterConfig(scheduler="tcp://...")
# ```

# %%
config = PredictConfig(tile_size=256, device="cpu")
probabilities = [predict(da, model, config) for da in scenes]
probabilities[0]

# %% [markdown]
# ## 7. Vectorize
#
# `vectorize` thresholds a probability map (the card's threshold unless you override it),
# labels connected objects and returns one polygon per object in the scene's UTM CRS with its
# area (equal-area, m²), perimeter, mean and maximum probability, pixel count and whether it
# touches masked pixels or the scene edge (`touches_invalid`), plus the `attrs` you give it
# (model, weights hash, run id). This is where the pixels are finally read and the model runs.

# %%
# Provenance columns; scene id, tile and date come from each array's attrs.
provenance = {"model": model.name, "weights_sha256": ",".join(model.sha256), "run_id": "quickstart"}
frames = [vectorize(p, threshold=model.threshold, attrs=provenance) for p in probabilities]
for da, frame in zip(scenes, frames):
    print(f"{da.attrs['item_id']}: {len(frame)} polygons in EPSG:{da.attrs['epsg']}")
frames[0].head()

# %% [markdown]
# ## 8. Merge across scenes and UTM zones
#
# The two tiles overlap and lie in different UTM zones. `merge_polygons` reprojects every
# scene's polygons to one polar CRS (EPSG:3413 by default), joins the views of the same slump
# and keeps each scene's evidence (`scene_ids`, `scene_mean_probs`, `n_scenes`). Each slump
# gets a stable id from its position.

# %%
polygons = merge_polygons(frames)
print(len(polygons), "slumps after merging; CRS", polygons.crs)
polygons.drop(columns="geometry").head()

# %% [markdown]
# With the demo's true outlines we can score the result at object level: predicted and true
# polygons are matched one to one by IoU (a pair counts from IoU 0.5). With random weights
# expect zeros.

# %%
import geopandas as gpd

truth = gpd.read_file(catalog.truth_path)
truth = truth[truth["year"] == YEAR]
scores = match_objects(polygons.geometry, truth.geometry)
print(f"precision {scores.precision:.2f}  recall {scores.recall:.2f}  "
      f"({scores.n_pred} predicted, {scores.n_true} true slumps in the demo area)")

# %% [markdown]
# ## 9. See it on a map
#
# Each scene on its own UTM grid: a true-colour view of the reflectance (NaN, white here,
# where SCL masked cloud, shadow or snow), the model's probabilities, and the polygons
# `vectorize` drew from them (orange) over the true outlines (cyan, dashed). The figure is
# also written to `figures/quickstart_map.png`.

# %%
import matplotlib

matplotlib.use("Agg")  # figures are written to files; the notebook also shows them inline
import matplotlib.pyplot as plt
import numpy as np

FIGURES = WORK / "figures"
FIGURES.mkdir(exist_ok=True)


def true_colour(scene):
    """B04/B03/B02 scaled to 0-1 between the 2nd and 98th percentile (NaN stays NaN)."""
    rgb = scene.sel(band=["B04", "B03", "B02"]).compute().transpose("y", "x", "band").values
    lo, hi = np.nanpercentile(rgb, [2, 98])
    return np.clip((rgb - lo) / (hi - lo), 0, 1)


fig, axes = plt.subplots(len(scenes), 3, figsize=(13, 4.3 * len(scenes)), squeeze=False)
for row, scene, prob, frame in zip(axes, scenes, probabilities, frames):
    x, y = scene["x"].values, scene["y"].values
    half = abs(float(x[1] - x[0])) / 2
    extent = (x.min() - half, x.max() + half, y.min() - half, y.max() + half)
    row[0].imshow(true_colour(scene), extent=extent)
    shown = row[1].imshow(prob.compute().values, extent=extent, cmap="magma", vmin=0, vmax=1)
    row[2].imshow(true_colour(scene), extent=extent)
    truth.to_crs(f"EPSG:{scene.attrs['epsg']}").boundary.plot(
        ax=row[2], color="cyan", linewidth=1, linestyle="--"
    )
    if len(frame):
        frame.boundary.plot(ax=row[2], color="orange", linewidth=1.5)
    row[2].set_xlim(extent[:2])
    row[2].set_ylim(extent[2:])
    tile = scene.attrs["item_id"]
    row[0].set_title(f"{tile}: true colour")
    row[1].set_title("slump probability")
    row[2].set_title(f"{len(frame)} polygons (orange), truth (cyan)")
    fig.colorbar(shown, ax=row[1], shrink=0.8)
    for ax in row:  # (geopandas labels the axes it draws on in its own words)
        ax.set_xlabel(f"x (m, EPSG:{scene.attrs['epsg']})", fontsize=10)
        ax.set_ylabel("y (m)" if ax is row[0] else "", fontsize=10)
fig.tight_layout()
fig.savefig(FIGURES / "quickstart_map.png", dpi=90)
plt.show()

# %% [markdown]
# ## 10. Write the inventory
#
# `write_inventory` writes one year into a GeoPackage that QGIS, GDAL and geopandas open as is:
# the layer `rts_<year>` (spatial index, valid geometries, EPSG:3413), a `scenes` table with
# each scene's footprint and status, and a `runs` table with the provenance of every write. The
# write is atomic, and an existing year is only replaced with `overwrite=True`.

# %%
out = WORK / "rts_quickstart.gpkg"
scene_rows = [
    {
        "scene_id": it["id"],
        "mgrs_tile": it["properties"]["s2:mgrs_tile"],
        "datetime": it["properties"]["datetime"],
        "epsg": it["properties"]["proj:epsg"],
        "cloud_cover": it["properties"]["eo:cloud_cover"],
        "status": "done",
        "n_polygons": len(frame),
        "geometry": it["geometry"],
    }
    for it, frame in zip(selected, frames)
]
run = {"run_id": "quickstart", "stac_url": stac_url, "weights": str(weights)}
write_inventory(out, polygons, year=YEAR, run=run, scenes=scene_rows, overwrite=True)
print(pyogrio.list_layers(out))
read_inventory(out, YEAR).head()

# %%
stack.close()  # stops the local STAC API

# %% [markdown]
# ## The same in one call
#
# `map_region` chains all of the above on a Dask cluster, records each scene's status and
# timings, survives a failing scene, and writes the GeoPackage once at the end:
#
# ```python
# from arctic_rts.pipeline import map_region
#
# result = map_region(catalog.bbox, 2021, stac=catalog.items_dir, weights=model,
#                     out=WORK / "rts_map_region.gpkg", overwrite=True)
# print(result.summary())
# ```
#
# From a shell: `arctic-rts map --bbox W S E N --year 2021 --stac <folder or URL> --weights
# model.safetensors --out rts.gpkg`, or `arctic-rts demo` for the full offline demo.
#
# ## Real imagery
#
# * **Earth Search v1** (AWS, open, no account): leave `stac` out, or pass
#   `stac_url=EARTH_SEARCH_URL` to `search_scenes`. The bbox is WGS84 degrees, e.g. the Lena
#   Delta or Herschel Island.
# * **Planetary Computer**: `stac="https://planetarycomputer.microsoft.com/api/stac/v1"` and
#   `sign=planetary_computer.sign_inplace` (the `planetary-computer` package) so the COG links
#   carry access tokens. Its items lack `raster:bands`; arctic-rts derives the reflectance
#   offset from the processing baseline, so results are not biased after January 2022.
