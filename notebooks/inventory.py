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
# # A yearly inventory: what changed from one summer to the next
#
# `arctic-rts inventory run` maps a set of regions every year into one GeoPackage: a layer of
# slumps per year (`rts_<year>`), a change layer per pair of consecutive years
# (`changes_<y1>_<y2>`) and, on request, a GeoParquet file and a per-region summary CSV. This
# notebook runs a two-year inventory on a small generated catalog, offline, and then looks at
# the result the way an analyst would: where slumps appeared, grew or shrank, and how the
# mapped area changes per year and region.
#
# The scenes are synthetic (the demo generator of arctic-rts: two overlapping Sentinel-2
# tiles in UTM zones 7 and 8 near Herschel Island), and so is every number below.

# %%
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")  # figures are written to files; the notebook also shows them inline
import matplotlib.pyplot as plt
import pandas as pd
import pyogrio
from shapely.geometry import box

import arctic_rts
from arctic_rts.cluster import connect
from arctic_rts.config import ClusterConfig
from arctic_rts.demo import generate_demo
from arctic_rts.inventory import read_inventory
from arctic_rts.inventory_run import run_inventory
from arctic_rts.model.domain import demo_weights

# Everything this notebook writes goes into one folder beside it (ignored by git).
WORK = Path("demo-out") / "inventory"
FIGURES = WORK / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
YEARS = (2021, 2022)
print("arctic-rts", arctic_rts.__version__, "- writing to", WORK.resolve())

# %% [markdown]
# ## 1. A catalog with two summers
#
# `generate_demo` writes scenes for every year it is given; slumps grow, appear and vanish
# from one year to the next, as they do on real permafrost coasts. `size_px=180` keeps the
# scenes tiny (1.8 km on a side) so that the notebook runs in about a minute.

# %%
catalog = generate_demo(WORK / "catalog", years=YEARS, size_px=180)
print("years:", catalog.years, "| bbox (W, S, E, N):", catalog.bbox)

# %% [markdown]
# ## 2. The run file
#
# An inventory is described by a TOML run file, the same file a scheduled job runs every year
# (see `deploy/inventory.example.toml`). Here it names two regions, the west and east halves of
# the catalog's area, the local item folder as its STAC source (served on 127.0.0.1 for the
# run) and the bundled demo model; the demo model is refused on any catalog but a generated
# one. `exports` asks for the GeoParquet file and the summary CSV.

# %%
w, s, e, n = catalog.bbox
mid = round((w + e) / 2, 4)
run_file = WORK / "run.toml"
run_file.write_text(
    f"""
out = "rts_inventory.gpkg"
years = {list(YEARS)}
stac = "{catalog.items_dir.resolve()}"
weights = "{demo_weights()}"
exports = ["geoparquet", "summary_csv"]
overwrite = true

[[regions]]
name = "west"
bbox = [{w}, {s}, {mid}, {n}]

[[regions]]
name = "east"
bbox = [{mid}, {s}, {e}, {n}]

[predict]
tile_size = 256
device = "cpu"
"""
)
print(run_file.read_text())

# %% [markdown]
# ## 3. Run it
#
# `run_inventory` is what `arctic-rts inventory run run.toml` calls. Each finished scene is
# recorded in a manifest beside the GeoPackage (`rts_inventory.gpkg.work/`), so a killed run
# resumes where it stopped and a rerun with nothing new computes nothing. The model runs on a
# Dask cluster; here a local one with a single worker process.

# %%
with connect(ClusterConfig(n_workers=1, threads_per_worker=2, gpu="no")) as client:
    result = run_inventory(run_file, progress=False, client=client)
print(result.summary())
print("status:", result.status)

# %% [markdown]
# The GeoPackage now holds a layer per year, the change layer, and the `scenes` and `runs`
# tables with each scene's status and the provenance of every write.

# %%
inventory = WORK / "rts_inventory.gpkg"
pyogrio.list_layers(inventory)

# %% [markdown]
# ## 4. The slumps of each year
#
# `read_inventory` returns one year's layer as a GeoDataFrame in EPSG:3413 (the polar
# stereographic CRS in which the two UTM zones merge without a seam).

# %%
years = {year: read_inventory(inventory, year) for year in YEARS}
for year, frame in years.items():
    print(year, len(frame), "slumps,", round(frame["area_m2"].sum() / 1e4, 2), "ha in total")
years[YEARS[-1]][["rts_id", "area_m2", "mean_prob", "n_scenes", "touches_invalid"]].head()

# %% [markdown]
# ## 5. A change map
#
# `changes_2021_2022` matches the slumps of the two years (a pair counts as one slump when they
# overlap by at least half of the smaller one) and classes each group: `new`, `grown`,
# `shrunk`, `stable` or `not_detected` (seen in 2021, not in 2022). Growth and shrinkage must
# exceed both 10 % of the earlier area and a one-pixel ring around it (`threshold_m2`), so
# that a slump whose outline moves by a pixel stays `stable`.

# %%
changes = gpd.read_file(inventory, layer=f"changes_{YEARS[0]}_{YEARS[1]}")
changes[["change", "area_prev_m2", "area_curr_m2", "d_area_m2", "threshold_m2"]].head()

# %%
COLOURS = {
    "new": "tab:red",
    "grown": "tab:orange",
    "stable": "tab:grey",
    "shrunk": "tab:blue",
    "not_detected": "tab:purple",
}
fig, ax = plt.subplots(figsize=(9, 6))
years[YEARS[0]].boundary.plot(ax=ax, color="black", linewidth=0.6, linestyle="--")
for change, colour in COLOURS.items():
    part = changes[changes["change"] == change]
    if len(part):
        part.plot(ax=ax, color=colour, alpha=0.7, label=f"{change} ({len(part)})")
ax.set_title(f"Changes {YEARS[0]} -> {YEARS[1]} (dashed: {YEARS[0]} outlines)")
ax.set_xlabel("x (m, EPSG:3413)")
ax.set_ylabel("y (m, EPSG:3413)")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
ax.set_aspect("equal")
fig.tight_layout()
fig.savefig(FIGURES / "change_map.png", dpi=100)
plt.show()

# %% [markdown]
# ## 6. Area per year and region
#
# The summary CSV has one row per region and year: the number of slumps, their total, mean,
# median and largest area, and the count of each change class towards that year. Each slump
# counts for the region that holds its representative point.

# %%
summary = pd.read_csv(WORK / "rts_inventory_summary.csv")
summary

# %%
area = summary.pivot(index="year", columns="region", values="total_area_m2") / 1e4
counts = summary[summary["year"] == YEARS[-1]].set_index("region")
change_cols = [f"n_{c}" for c in COLOURS]

fig, (ax_area, ax_change) = plt.subplots(1, 2, figsize=(11, 4))
area.plot.bar(ax=ax_area, rot=0)
ax_area.set_ylabel("mapped slump area (ha)")
ax_area.set_title("Area per year and region")
counts[change_cols].rename(columns=lambda c: c[2:]).plot.bar(
    ax=ax_change, rot=0, stacked=True, color=list(COLOURS.values())
)
ax_change.set_ylabel("slumps")
ax_change.set_title(f"Change classes towards {YEARS[-1]}")
fig.tight_layout()
fig.savefig(FIGURES / "area_per_year.png", dpi=100)
plt.show()

# %% [markdown]
# ## 7. Against the truth
#
# The generator knows every slump's true outline per year. The mapped area per year next to
# the true area in the same regions shows whether the trend the inventory reports is the
# trend on the ground (slumps that lie outside both regions are left out).

# %%
truth = gpd.read_file(catalog.truth_path)
inside = truth.to_crs("EPSG:4326").representative_point().within(box(w, s, e, n))
truth = truth[inside].to_crs("EPSG:6931")  # equal-area, as area_m2
compare = pd.DataFrame(
    {
        "mapped (ha)": [years[y]["area_m2"].sum() / 1e4 for y in YEARS],
        "true (ha)": [truth[truth["year"] == y].area.sum() / 1e4 for y in YEARS],
    },
    index=list(YEARS),
)
compare.round(2)

# %% [markdown]
# ## Next
#
# * The same run from a shell: `arctic-rts inventory run run.toml`, with `--years 2021-2022`
#   or `--year latest` in place of the file's years, `--report run.json` for a machine-readable
#   report and `--log run.log` for a log file.
# * The scheduled recipes (cron, systemd, Kubernetes, Slurm) are in `deploy/`; the docs page
#   "Yearly runs and deployment" walks through them.
# * The inventory opens as is in QGIS: one layer per year plus the change layers.
