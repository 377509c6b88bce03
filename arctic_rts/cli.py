"""The ``arctic-rts`` command line: parse, call the library, return an exit code.

Errors the toolkit raises on purpose (:class:`~arctic_rts.errors.ArcticRTSError`), bad paths and
bad values print one line on stderr and exit with code 2; nothing here prints a traceback for bad
input. Heavy modules (torch, dask) are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from arctic_rts import __version__
from arctic_rts.config import (
    ClusterConfig,
    MapConfig,
    PredictConfig,
    SearchConfig,
    VectorizeConfig,
)
from arctic_rts.errors import ArcticRTSError

#: Exit codes: 0 success, 1 the run finished but some scenes failed, 2 bad input or failure.
EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of the CLI.

    argparse's default prints the whole usage block and prefixes the subcommand
    (``arctic-rts map: error:``); scripts that grep stderr want the one ``arctic-rts: error:``
    line. Sub-parsers inherit this class (``add_subparsers`` uses the parent's type).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"arctic-rts: error: {message} (see {self.prog} --help)\n")


def _months(text: str) -> tuple[int, ...]:
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


def _add_map_options(p: argparse.ArgumentParser) -> None:
    d_search, d_pred, d_vec = SearchConfig(), PredictConfig(), VectorizeConfig()
    p.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"), required=True)
    p.add_argument("--year", type=int, required=True)
    p.add_argument(
        "--stac",
        default=None,
        help="STAC API URL, or 'demo' for the embedded demo catalog (default: Earth Search v1)",
    )
    p.add_argument(
        "--weights", type=Path, default=None, help="safetensors weights (default: bundled)"
    )
    p.add_argument(
        "--ensemble",
        type=Path,
        nargs="+",
        default=None,
        metavar="WEIGHTS",
        help="several weights files; probabilities are averaged",
    )
    p.add_argument("--out", type=Path, default=Path("rts_inventory.gpkg"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--months", type=_months, default=d_search.months, help="e.g. 6-8 (default)")
    p.add_argument("--max-cloud", type=float, default=d_search.max_cloud_cover, metavar="PCT")
    p.add_argument("--threshold", type=float, default=d_vec.threshold, help="default: model card")
    p.add_argument("--min-area", type=float, default=d_vec.min_area_m2, metavar="M2")
    p.add_argument("--tile-size", type=int, default=d_pred.tile_size)
    p.add_argument("--tta", action="store_true", help="average the 8 flips/rotations")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    p.add_argument("--workers", type=int, default=None, help="local worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _map_config(args: argparse.Namespace) -> MapConfig:
    return MapConfig(
        search=SearchConfig(months=tuple(args.months), max_cloud_cover=args.max_cloud),
        predict=PredictConfig(tile_size=args.tile_size, tta=args.tta),
        vectorize=VectorizeConfig(threshold=args.threshold, min_area_m2=args.min_area),
        cluster=ClusterConfig(scheduler=args.scheduler, n_workers=args.workers),
    )


def _cmd_map(args: argparse.Namespace) -> int:
    from arctic_rts.pipeline import map_region

    weights = args.ensemble if args.ensemble else args.weights
    result = map_region(
        tuple(args.bbox),
        args.year,
        stac=args.stac,
        weights=weights,
        out=args.out,
        config=_map_config(args),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(result.summary())
    return EXIT_PARTIAL if result.n_failed else EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from arctic_rts.pipeline import run_demo

    report = run_demo(root=args.root, out=args.out, workers=args.workers, progress=not args.quiet)
    print(report)
    return EXIT_OK


def _cmd_catalog_serve(args: argparse.Namespace) -> int:
    from arctic_rts.catalog import serve_forever

    serve_forever(args.source, port=args.port)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``arctic-rts`` (exposed for docs and tests)."""
    parser = _Parser(
        prog="arctic-rts", description="Map retrogressive thaw slumps from Sentinel-2."
    )
    parser.add_argument("--version", action="version", version=f"arctic-rts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("map", help="map thaw slumps in a bbox and year into a GeoPackage")
    _add_map_options(p)
    p.set_defaults(func=_cmd_map)

    p = sub.add_parser("demo", help="the offline demo: generated scenes, local STAC, bundled model")
    p.add_argument("--root", type=Path, default=Path(".demo"), help="demo catalog folder")
    p.add_argument("--out", type=Path, default=Path("demo-out/rts_demo.gpkg"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)

    cat = sub.add_parser("catalog", help="the embedded STAC API").add_subparsers(
        dest="catalog_command", required=True
    )
    p = cat.add_parser(
        "serve", help="serve a folder of STAC item JSONs (or a .parquet) on 127.0.0.1"
    )
    p.add_argument("source", type=Path)
    p.add_argument("--port", type=int, default=7822)
    p.set_defaults(func=_cmd_catalog_serve)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("arctic-rts: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ArcticRTSError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        print(f"arctic-rts: error: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
