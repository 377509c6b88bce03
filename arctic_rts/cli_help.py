"""The help of the ``arctic-rts`` command line: defaults, units, examples; shared options.

:class:`HelpFormatter` ends every option's help with its default; :data:`EXAMPLES` gives each
command the example its ``--help`` ends with (``tests/test_cli_help.py`` parses every one);
the option groups of ``map`` (search, post-processing, network), ``inventory run`` and the dry
runs live here, beside their help texts, and so does the name of the option behind each config
field, for errors (:func:`named_as_flags`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from arctic_rts.config import (
    BACKENDS,
    DEFAULT_MIN_AREA_M2,
    LATEST_RULE,
    PRECISIONS,
    NetworkConfig,
    PredictConfig,
    SearchConfig,
    VectorizeConfig,
)
from arctic_rts.errors import ConfigError

#: One example per command, shown at the end of its ``--help`` (keyed by the words after
#: ``arctic-rts``).
EXAMPLES = {
    "": "arctic-rts demo\n  arctic-rts map --bbox -139.2 69.3 -138.2 69.6 --year 2021",
    "map": "arctic-rts map --bbox -139.2 69.3 -138.2 69.6 --year 2021 --out herschel.gpkg\n"
    "  arctic-rts map --bbox -139.2 69.3 -138.2 69.6 --year 2021 --dry-run",
    "demo": "arctic-rts demo --workers 2 --out demo-out/rts_demo.gpkg",
    "dataset": "arctic-rts dataset build --labels slumps.gpkg --stac demo --out data.zarr",
    "dataset build": "arctic-rts dataset build --labels slumps.gpkg --footprints images.gpkg "
    "--stac https://earth-search.aws.element84.com/v1 --out data.zarr",
    "train": "arctic-rts train --config deploy/demo_weights/train.toml",
    "evaluate": "arctic-rts evaluate --weights run/weights.safetensors --images chips/images "
    "--masks chips/masks",
    "inventory": "arctic-rts inventory run deploy/inventory.example.toml --year latest",
    "inventory run": "arctic-rts inventory run deploy/inventory.example.toml --years 2017-2025 "
    "--report run.json --log run.log\n"
    "  arctic-rts inventory run deploy/inventory.example.toml --year latest --dry-run",
    "catalog": "arctic-rts catalog serve .demo/items --port 7822",
    "catalog serve": "arctic-rts catalog serve .demo/items --port 7822",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that ends every option with its default: ``(default: 60)``, ``(default: off)``.

    Options whose help already says its default (``default: the model card's``) keep their
    words; an option without a default of its own must say in its help what it falls back to.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default:" in text or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)".strip()
        if action.required:
            return f"{text} (required)".strip()
        if action.default is None:
            return text
        value = action.default
        if isinstance(value, list | tuple):
            value = " ".join(str(v) for v in value)
        shown = str(value).replace("%", "%%")  # argparse expands % in help texts
        return f"{text} (default: {shown})".strip()


def add_dry_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the scenes the run would use (tile, date, cloud, size), the pixel and tile "
        "counts and an estimate of the model's time (one tile timed here); nothing mapped or "
        "written",
    )
    p.add_argument(
        "--format",
        choices=("table", "geojson"),
        default="table",
        help="with --dry-run: a text table or a GeoJSON FeatureCollection of the scenes' "
        "footprints (default: table)",
    )
    p.add_argument(
        "--max-area",
        type=float,
        default=None,
        metavar="KM2",
        help="largest area in km2 mapped without --yes (default: the run file's [search] "
        f"max_area_km2, else {SearchConfig().max_area_km2:g})",
    )
    p.add_argument("--yes", action="store_true", help="map an area larger than --max-area")


def add_inventory_run_options(p: argparse.ArgumentParser) -> None:
    years = p.add_mutually_exclusive_group()
    years.add_argument(
        "--years",
        metavar="YEARS",
        default=None,
        # one word: a list of words would swallow a run file written after it
        help="years to map instead of the run file's: 2017-2025, 2019,2021 or 2015-2017,2021 "
        "(default: the run file's years)",
    )
    years.add_argument(
        "--year",
        default=None,
        metavar="YEAR",
        help="one year instead of the run file's, or 'latest': "
        + LATEST_RULE.removeprefix("latest = ")
        + " (default: the run file's years)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="address of a running Dask scheduler, e.g. tcp://host:8786 (default: the run "
        "file's [cluster] scheduler, else a local cluster)",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="JSON",
        help="write a run report there: status, per year and scene counts, timings, failures "
        "(default: none)",
    )
    p.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="append the run's log (UTC timestamps, every scene and year) to this file "
        "(default: none)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="compute only the scenes that an earlier run tried: recorded as failed in the work "
        "folder, or finished in a record this run cannot reuse (an older layout, or a smaller "
        "part of the scene mapped); reuse every other finished scene and compute no scene that "
        "no run has tried (with --dry-run: list the scenes it would compute)",
    )
    add_dry_run_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages (as -q)")


# --- the options of map (and their parts shared with evaluate and inventory run) -------------


def parse_months(text: str) -> tuple[int, ...]:
    """Parse ``6,7,8`` or ``6-8`` into a tuple of months."""
    try:
        if "-" in text:
            first, last = (int(v) for v in text.split("-"))
            if first > last:
                raise argparse.ArgumentTypeError(
                    f"months range {text!r} is empty; write it first-last, e.g. 6-8"
                )
            return tuple(range(first, last + 1))
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"months must look like 6,7,8 or 6-8, got {text!r}"
        ) from None


def add_map_options(p: argparse.ArgumentParser) -> None:
    d_search = SearchConfig()
    p.add_argument(
        "--bbox",
        nargs=4,
        type=float,
        metavar=("W", "S", "E", "N"),
        required=True,
        help="area to map: west south east north in degrees, EPSG:4326 (longitude/latitude); "
        "west > east crosses the antimeridian (180 degrees)",
    )
    p.add_argument(
        "--year",
        type=int,
        required=True,
        help="year of the scenes, from 2015 (scenes from --months of that year)",
    )
    p.add_argument(
        "--whole-scenes",
        action="store_true",
        help="map and keep the selected MGRS scenes whole; by default only the bbox's pixels "
        "(plus the model's halo and 1 km) are mapped and the slumps whose representative point "
        "lies in the bbox are kept, whole (as inventory run does with its regions)",
    )
    p.add_argument(
        "--stac",
        default=None,
        help="STAC API URL, or 'demo' for the embedded demo catalog (default: Earth Search v1)",
    )
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="safetensors weights (default: the bundled real-imagery model; on --stac demo "
        "the bundled demo model)",
    )
    p.add_argument(
        "--allow-demo-model",
        action="store_true",
        help="let a model trained on generated demo scenes map real scenes (tests only)",
    )
    p.add_argument(
        "--ensemble",
        type=Path,
        nargs="+",
        default=None,
        metavar="WEIGHTS",
        help="several weights files; probabilities are averaged (default: one model, --weights)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("rts_inventory.gpkg"), help="the GeoPackage to write"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument(
        "--replace-partial",
        action="store_true",
        help="with --overwrite: replace the year even when scenes failed (default: a year the "
        "output holds is replaced only by a complete result)",
    )
    p.add_argument(
        "--months",
        type=parse_months,
        default=d_search.months,
        help="months of the season, 6-8 or 6,7,8 (default: 6-8)",
    )
    p.add_argument(
        "--max-cloud",
        type=float,
        default=d_search.max_cloud_cover,
        metavar="PCT",
        help="largest scene-wide cloud cover of a scene, in %%",
    )
    _add_map_processing_options(p)


def _add_map_processing_options(p: argparse.ArgumentParser) -> None:
    """How ``map`` turns scenes into polygons, and where it runs."""
    d_pred, d_vec = PredictConfig(), VectorizeConfig()
    p.add_argument(
        "--threshold",
        type=float,
        default=d_vec.threshold,
        metavar="P",
        help="slump probability 0-1 at which a pixel counts (default: the model card's)",
    )
    p.add_argument(
        "--min-area",
        type=float,
        default=d_vec.min_area_m2,
        metavar="M2",
        help=f"drop polygons under this area in m2 (default: the model card's, else "
        f"{DEFAULT_MIN_AREA_M2:g})",
    )
    add_postprocessing_options(p)
    p.add_argument(
        "--water-mask",
        action="store_true",
        help="set the slump probability to 0 on pixels the scene's SCL classes as water",
    )
    p.add_argument(
        "--drop-cut",
        action="store_true",
        help="drop slumps that no scene saw whole (cut by cloud, nodata or the scene edge)",
    )
    p.add_argument(
        "--tile-size",
        type=int,
        default=d_pred.tile_size,
        metavar="PX",
        help="edge of the windows the model runs on, in pixels (a multiple of 16)",
    )
    p.add_argument("--tta", action="store_true", help="average the 8 flips/rotations")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d_pred.precision,
        help="forward-pass arithmetic (auto: bf16 on GPUs, fp32 on CPUs)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=d_pred.backend,
        help="what runs the forward pass: torch, or onnxruntime (CPU, fp32; the onnx extra)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="address of a running Dask scheduler, e.g. tcp://host:8786 (default: a local cluster)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: one per GPU, else one per two cores)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages (as -q)")
    add_network_options(p)
    add_asset_options(p)
    add_dry_run_options(p)


def add_asset_options(p: argparse.ArgumentParser) -> None:
    """Where the catalog's asset hrefs may point (``LoadConfig.asset_roots``/``asset_hosts``)."""
    p.add_argument(
        "--asset-root",
        action="append",
        default=None,
        metavar="DIR",
        help="a folder whose files asset hrefs may name, besides a local --stac catalog's own "
        "folder; repeatable (default: only that folder; none for a --stac URL)",
    )
    p.add_argument(
        "--asset-host",
        action="append",
        default=None,
        metavar="HOST",
        help="a host http(s) asset hrefs may name (.example.com: with its subdomains); "
        "repeatable; items whose hrefs name others are skipped (default: any host)",
    )


def add_network_options(p: argparse.ArgumentParser) -> None:
    """Timeouts and retries of STAC requests and COG reads (:class:`NetworkConfig`)."""
    d_net = NetworkConfig()
    p.add_argument("--connect-timeout", type=float, default=d_net.connect_timeout_s, metavar="S")
    p.add_argument(
        "--read-timeout",
        type=float,
        default=d_net.read_timeout_s,
        metavar="S",
        help="seconds a STAC request waits for the next bytes (a COG request: in all)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=d_net.max_retries,
        help="retries of a request after 429, 5xx, resets and timeouts",
    )
    p.add_argument(
        "--retry-time",
        type=float,
        default=d_net.retry_total_s,
        metavar="S",
        help="seconds one STAC request may take over all its tries",
    )


def add_postprocessing_options(p: argparse.ArgumentParser) -> None:
    """Opening and hysteresis, shared by ``map`` and ``evaluate`` (defaults: the card's)."""
    p.add_argument(
        "--opening-px",
        type=int,
        default=None,
        metavar="PX",
        help="radius of a morphological opening of the mask in pixels, 0 for none "
        "(default: the model card's, else 0)",
    )
    p.add_argument(
        "--hysteresis-low",
        type=float,
        default=None,
        metavar="P",
        help="pixels at or above this probability join an object that reaches the threshold, "
        "0 for off (default: the model card's, else off)",
    )


def add_label_options(p: argparse.ArgumentParser) -> None:
    """``dataset build``: the label file and how to read it (tables, points, dates)."""
    p.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="slump polygons: a vector file (GeoPackage, shapefile, GeoJSON) or a CSV/XLSX table",
    )
    p.add_argument(
        "--wkt-column",
        default=None,
        help="table column with WKT geometries (default: none; a CSV/XLSX table needs it or "
        "--x-column and --y-column)",
    )
    p.add_argument(
        "--x-column", default=None, help="table column of x/longitude of points (default: none)"
    )
    p.add_argument(
        "--y-column", default=None, help="table column of y/latitude of points (default: none)"
    )
    p.add_argument(
        "--label-crs",
        default=None,
        help="CRS of a table's coordinates, or of a vector file that declares none, e.g. "
        "EPSG:4326 (default: the file's own; a table has none)",
    )
    p.add_argument(
        "--date-column",
        default=None,
        help="column with each label's date (default: image_date, date or datetime)",
    )
    p.add_argument(
        "--date",
        default=None,
        help="YYYY-MM-DD given to labels without a date (default: none; undated labels are "
        "skipped)",
    )
    p.add_argument(
        "--buffer-m",
        type=float,
        default=None,
        metavar="R",
        help="turn point and line labels into polygons of radius R metres (default: none; "
        "points and lines are refused)",
    )


#: The option behind each config field that the command line sets, so that an invalid value is
#: reported as the user typed it (``--tile-size``, not ``tile_size``).
_FLAGS = {
    "months": "--months",
    "max_cloud_cover": "--max-cloud",
    "max_area_km2": "--max-area",
    "tile_size": "--tile-size",
    "precision": "--precision",
    "backend": "--backend",
    "threshold": "--threshold",
    "min_area_m2": "--min-area",
    "opening_px": "--opening-px",
    "hysteresis_low": "--hysteresis-low",
    "scheduler": "--scheduler",
    "n_workers": "--workers",
    "asset_roots": "--asset-root",
    "asset_hosts": "--asset-host",
    "connect_timeout_s": "--connect-timeout",
    "read_timeout_s": "--read-timeout",
    "max_retries": "--retries",
    "retry_total_s": "--retry-time",
}
_FIELD = re.compile(r"\b(" + "|".join(map(re.escape, _FLAGS)) + r")\b")


@contextlib.contextmanager
def named_as_flags() -> Iterator[None]:
    """Re-raise a ConfigError from configs built out of options with the options' names."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(_FIELD.sub(lambda m: _FLAGS[m.group(1)], str(err))) from err
