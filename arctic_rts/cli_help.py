"""The help of the ``arctic-rts`` command line: defaults, units, examples; shared options.

:class:`HelpFormatter` ends every option's help with its default; :data:`EXAMPLES` gives each
command the example its ``--help`` ends with (``tests/test_cli_help.py`` parses every one);
the option groups of ``inventory run`` and of the dry runs live here, beside their help texts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from arctic_rts.config import LATEST_RULE

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
        help="list the scenes the run would use (tile, date, cloud, size) and the pixel count; "
        "no compute, nothing written",
    )
    p.add_argument(
        "--format",
        choices=("table", "geojson"),
        default="table",
        help="with --dry-run: a text table or a GeoJSON FeatureCollection of the scenes' "
        "footprints (default: table)",
    )


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
    add_dry_run_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
