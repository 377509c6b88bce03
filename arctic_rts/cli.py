"""The ``arctic-rts`` command line: parse, call the library, return an exit code.

Exit codes (README, "Exit codes"): 0 complete; 1 partial (scenes failed, output written); 2 usage,
input or environment error that the one line on stderr explains (the errors the toolkit raises on
purpose, :class:`~arctic_rts.errors.ArcticRTSError`, bad paths, a read-only or full disk);
3 nothing found (no scene for the area and season); 4 unexpected failure: one line on stderr, the
traceback in a log file that the line names; 130 interrupted. Nothing here prints a traceback.
Heavy modules (torch, dask) are imported inside the commands so ``--help`` stays fast.

The library logs (one ``logging.getLogger(__name__)`` per module) and never prints; the CLI is
the one place that gives the ``arctic_rts`` loggers a handler (:func:`configure_logging`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import errno
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from arctic_rts import __version__
from arctic_rts.bands import L2A_BANDS, SCL_WATER
from arctic_rts.cli_help import (
    EXAMPLES,
    HelpFormatter,
    add_inventory_run_options,
    add_label_options,
    add_map_options,
    add_postprocessing_options,
    named_as_flags,
)
from arctic_rts.config import (
    ClusterConfig,
    InventoryConfig,
    InventoryRunConfig,
    LoadConfig,
    MapConfig,
    NetworkConfig,
    PredictConfig,
    SearchConfig,
    VectorizeConfig,
    parse_years,
)
from arctic_rts.errors import ArcticRTSError, ConfigError, NoScenesError
from arctic_rts.runfile import read_inventory_run

#: Exit codes: 0 complete, 1 partial (some scenes failed, output written), 2 usage, input or
#: environment error (one line says which and how to fix it), 3 nothing found, 4 unexpected
#: failure (one line; the traceback in a log file), 130 interrupted.
EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_NOTHING_FOUND = 0, 1, 2, 3
EXIT_UNEXPECTED, EXIT_INTERRUPTED = 4, 130

#: OSError numbers that are the environment's fault, not a bug: full disk, quota, read-only.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of the CLI.

    argparse's default prints the whole usage block and prefixes the subcommand
    (``arctic-rts map: error:``); scripts that grep stderr want the one ``arctic-rts: error:``
    line. Sub-parsers inherit this class (``add_subparsers`` uses the parent's type), its help
    formatter (defaults shown) and an example from :data:`EXAMPLES`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        if self.epilog is None:
            example = EXAMPLES.get(self.prog.removeprefix("arctic-rts").strip())
            self.epilog = f"example:\n  {example}" if example else None

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"arctic-rts: error: {message} (see {self.prog} --help)\n")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(quiet: bool = False, level: str | int | None = None) -> None:
    """Send the ``arctic_rts`` loggers' records to stderr as bare lines.

    INFO and above (progress, such as training steps), WARNING and above with ``quiet``, or
    ``level`` when given (a name such as "DEBUG", or a number). Idempotent: calling it again
    replaces the handler it installed before. Other libraries' loggers (dask, distributed) are
    left as they are.
    """
    root = logging.getLogger("arctic_rts")
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    if level is None:
        level = logging.WARNING if quiet else logging.INFO
    root.setLevel(level)


#: Warnings of dependencies that tell a user of the command line nothing they can act on
#: (deprecations inside libraries, pystac-client's conformance notes about a catalog that
#: works). Shown again with ``-v``; the library itself never filters warnings.
_NOISE = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _filter_dependency_warnings() -> None:
    import warnings

    for category in _NOISE:
        warnings.filterwarnings("ignore", category=category)
    try:
        from pystac_client.warnings import PystacClientWarning
    except ImportError:  # pragma: no cover - a dependency
        return
    warnings.filterwarnings("ignore", category=PystacClientWarning)


def _log_level(args: argparse.Namespace) -> str | int:
    """The level ``-v``, ``-q``, ``--log-level`` and a command's ``--quiet`` ask for."""
    if args.log_level:
        return str(args.log_level)
    if args.verbose:
        return logging.DEBUG
    if args.log_quiet or getattr(args, "quiet", False):
        return logging.WARNING
    return logging.INFO


def _show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only where progress messages show too: not with -q, --quiet or a
    --log-level above INFO."""
    level = _log_level(args)
    return (logging.getLevelName(level) if isinstance(level, str) else level) <= logging.INFO


def _map_config(args: argparse.Namespace) -> MapConfig:
    with named_as_flags():
        return MapConfig(
            search=SearchConfig(
                months=tuple(args.months),
                max_cloud_cover=args.max_cloud,
                **({"max_area_km2": args.max_area} if args.max_area is not None else {}),
            ),
            predict=PredictConfig(
                tile_size=args.tile_size,
                tta=args.tta,
                precision=args.precision,
                backend=args.backend,
            ),
            vectorize=VectorizeConfig(
                threshold=args.threshold,
                min_area_m2=args.min_area,
                opening_px=args.opening_px,
                hysteresis_low=args.hysteresis_low,
            ),
            cluster=ClusterConfig(scheduler=args.scheduler, n_workers=args.workers),
            load=LoadConfig(
                water_scl_classes=(SCL_WATER,) if args.water_mask else (),
                asset_roots=tuple(args.asset_root or ()),
                asset_hosts=tuple(args.asset_host or ()),
            ),
            inventory=InventoryConfig(drop_cut=args.drop_cut),
            network=NetworkConfig(
                connect_timeout_s=args.connect_timeout,
                read_timeout_s=args.read_timeout,
                max_retries=args.retries,
                retry_total_s=args.retry_time,
            ),
            allow_demo_model=args.allow_demo_model,
        )


def _cmd_map(args: argparse.Namespace) -> int:
    from arctic_rts.config import bbox_geometry, validate_bbox
    from arctic_rts.pipeline import map_region
    from arctic_rts.plan import check_area, plan_map

    weights = args.ensemble if args.ensemble else args.weights
    config = _map_config(args)
    if args.dry_run:
        plan = plan_map(
            tuple(args.bbox), args.year, stac=args.stac, weights=weights,
            config=config, clip=not args.whole_scenes,
        )  # fmt: skip
        return _print_plan(plan, args.format)
    if not args.yes:
        bbox = bbox_geometry(validate_bbox(args.bbox), densify=0.01)
        check_area(bbox, config.search.max_area_km2, "the bbox", "map it")
    result = map_region(
        tuple(args.bbox),
        args.year,
        stac=args.stac,
        weights=weights,
        out=args.out,
        config=config,
        overwrite=args.overwrite,
        replace_partial=args.replace_partial,
        progress=_show_progress(args),
        clip=not args.whole_scenes,
    )
    print(result.summary())
    return EXIT_PARTIAL if result.n_failed else EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    given = {"seed": args.seed, "years": args.years, "size_px": args.size_px}
    catalog = {k: v for k, v in given.items() if v is not None}
    if args.generate_only:
        from arctic_rts.demo import generate_demo

        demo = generate_demo(args.root, **catalog)
        print(f"demo catalog: {demo.root} ({len(demo.item_paths)} items, truth {demo.truth_path})")
        return EXIT_OK
    from arctic_rts.demo import run_demo

    report = run_demo(
        root=args.root,
        out=args.out,
        weights=args.weights,
        workers=args.workers,
        threshold=args.threshold,
        progress=_show_progress(args),
        **catalog,
    )
    print(report)
    return EXIT_OK


def _cmd_dataset_build(args: argparse.Namespace) -> int:
    from arctic_rts.catalog import stac_endpoint
    from arctic_rts.train.build import build_dataset, plan_dataset
    from arctic_rts.train.labels import LabelFormat

    label_format = LabelFormat(
        wkt_column=args.wkt_column,
        x_column=args.x_column,
        y_column=args.y_column,
        crs=args.label_crs,
        date_column=args.date_column,
        date=args.date,
        buffer_m=args.buffer_m,
    )
    if args.dry_run:
        with stac_endpoint(args.stac) as url:
            rows = plan_dataset(
                args.labels,
                stac_url=url,
                footprints=args.footprints,
                tolerance_days=args.tolerance_days,
                max_cloud_cover=args.max_cloud,
                label_format=label_format,
            )
        for row in rows:
            scenes = ", ".join(row["scenes"]) or "no scene within the tolerance"
            print(f"{row['image']}  {row['date']}  {row['n_labels']} labels  {scenes}")
        n = sum(len(r["scenes"]) for r in rows)
        print(f"{len(rows)} labelled images, {n} scene reads; nothing written (--dry-run)")
        return EXIT_OK
    with stac_endpoint(args.stac) as url:
        out = build_dataset(
            args.labels,
            args.out,
            stac_url=url,
            footprints=args.footprints,
            bands=tuple(args.bands),
            patch_size=args.patch_size,
            stride=args.stride,
            tolerance_days=args.tolerance_days,
            max_cloud_cover=args.max_cloud,
            unlabelled_regions=[tuple(b) for b in args.unlabelled_bbox or []],
            unlabelled_year=args.unlabelled_year,
            dem=args.dem,
            label_format=label_format,
        )
    print(f"dataset: {out}")
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from arctic_rts.train.loop import load_train_config, train

    overrides = {k: v for k, v in (("steps", args.steps), ("device", args.device)) if v}
    config = load_train_config(args.config, **overrides)
    if args.cross_validate:
        from arctic_rts.train.crossval import train_with_crossval

        if args.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {args.jobs}.")
        work = Path(config.out_dir).parent / f"{Path(config.out_dir).name}-crossval"
        weights, result = train_with_crossval(config, work, seeds=tuple(args.seeds), jobs=args.jobs)
        summary = result["summary"]
        held = summary["held_out_scores"]
        print(
            f"cross-validation ({len(result['folds'])} folds): threshold "
            f"{summary['threshold']}, min area {summary['min_area_m2']} m2; held-out pixel "
            f"IoU {held['pixel_iou']['mean']:.3f} +- {held['pixel_iou']['std']:.3f}, object "
            f"precision {held['object_precision']['mean']:.3f}, recall "
            f"{held['object_recall']['mean']:.3f} ({work / 'crossval.json'})"
        )
    else:
        weights = train(config, progress=_show_progress(args))
    print(f"weights: {weights}")
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from arctic_rts.train.evaluate import evaluate, format_table

    result = evaluate(
        args.weights,
        args.images,
        args.masks,
        threshold=args.threshold,
        min_area_m2=args.min_area,
        opening_px=args.opening_px,
        hysteresis_low=args.hysteresis_low,
        json_out=args.json,
    )
    print(format_table(result))
    return EXIT_OK


def _inventory_config(args: argparse.Namespace) -> InventoryRunConfig:
    """The run file, with the years and scheduler of the command line in place of its own."""
    cfg = read_inventory_run(args.run_file)
    changes: dict[str, Any] = {}
    specs = args.years or args.year
    if specs:
        changes["years"] = parse_years(specs, cfg.map.search.months)
    run_map = cfg.map
    with named_as_flags():
        if args.scheduler:
            cluster = dataclasses.replace(cfg.map.cluster, scheduler=args.scheduler)
            run_map = dataclasses.replace(run_map, cluster=cluster)
        if args.max_area is not None:
            search = dataclasses.replace(cfg.map.search, max_area_km2=args.max_area)
            run_map = dataclasses.replace(run_map, search=search)
    return dataclasses.replace(cfg, **changes, map=run_map)


def _print_plan(plan: Any, fmt: str) -> int:
    from arctic_rts.plan import format_plan, plan_geojson

    print(plan_geojson(plan) if fmt == "geojson" else format_plan(plan))
    return EXIT_OK


def _cmd_inventory_run(args: argparse.Namespace) -> int:
    from arctic_rts.inventory_run import run_inventory
    from arctic_rts.run_report import check_writable_file, log_to_file, reporting

    if args.dry_run:  # no report, no log: a dry run writes nothing
        from arctic_rts.plan import plan_inventory

        plan = plan_inventory(_inventory_config(args), retry_failed=args.retry_failed)
        return _print_plan(plan, args.format)
    check_writable_file(args.report, "--report")
    check_writable_file(args.log, "--log")
    # A run file or years that cannot be used are reported too: a scheduler reads the report.
    with (
        log_to_file(args.log) as note,
        reporting(args.report, run_file=args.run_file.resolve()) as report,
    ):
        cfg = _inventory_config(args)
        report.years = cfg.years
        if not args.yes:
            _check_regions_area(cfg)
        report.result = result = run_inventory(
            cfg, progress=_show_progress(args), retry_failed=args.retry_failed
        )
        note(result.summary())
    print(result.summary())
    if result.years and not any(y.n_scenes for y in result.years):
        return EXIT_NOTHING_FOUND
    return EXIT_PARTIAL if result.n_failed else EXIT_OK


def _check_regions_area(cfg: InventoryRunConfig) -> None:
    from arctic_rts.inventory_run import _area, _read_regions
    from arctic_rts.plan import check_area

    limit = cfg.map.search.max_area_km2
    check_area(_area(_read_regions(cfg)), limit, "the area of the run's regions", "map it")


def _cmd_catalog_serve(args: argparse.Namespace) -> int:
    from arctic_rts.catalog import serve_forever

    serve_forever(
        args.source,
        port=args.port,
        on_ready=lambda url: print(f"STAC API at {url} (Ctrl-C to stop)", flush=True),
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``arctic-rts`` (exposed for docs and tests)."""
    # no abbreviations at the top: a command's own --log must not read as --log-level/--log-file
    parser = _Parser(
        prog="arctic-rts",
        description="Map retrogressive thaw slumps from Sentinel-2.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"arctic-rts {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="debug messages and dependency warnings too"
    )
    verbosity.add_argument(
        "-q", dest="log_quiet", action="store_true", help="warnings and errors only, no progress"
    )
    verbosity.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=None,
        help="the level of the messages on stderr (default: INFO)",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="where an unexpected failure's traceback goes (default: a new file in the "
        "temporary folder, named on stderr)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("map", help="map thaw slumps in a bbox and year into a GeoPackage")
    add_map_options(p)
    p.set_defaults(func=_cmd_map)

    _add_demo_parser(sub)
    _add_training_parsers(sub)
    _add_service_parsers(sub)
    return parser


def _add_demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="the offline demo: generated scenes, local STAC, bundled model")
    p.add_argument("--root", type=Path, default=Path(".demo"), help="demo catalog folder")
    p.add_argument(
        "--out", type=Path, default=Path("demo-out/rts_demo.gpkg"), help="the GeoPackage to write"
    )
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages (as -q)")
    p.add_argument(
        "--generate-only", action="store_true", help="only write the catalog (e.g. training data)"
    )
    p.add_argument("--seed", type=int, default=None, help="scene seed (default: the demo's)")
    p.add_argument(
        "--size-px",
        type=int,
        default=None,
        help="scene edge in 10 m pixels (default: the demo's, 1008)",
    )
    p.add_argument(
        "--years", type=int, nargs="+", default=None, help="years with scenes (default: the demo's)"
    )
    p.add_argument("--weights", type=Path, default=None, help="default: the bundled weights")
    p.add_argument(
        "--threshold", type=float, default=None, help="probability threshold (default: the card's)"
    )
    p.set_defaults(func=_cmd_demo)


def _add_training_parsers(sub: Any) -> None:
    """``dataset build``, ``train`` and ``evaluate``."""
    _add_dataset_parser(sub)
    _add_train_parsers(sub)


def _add_dataset_parser(sub: Any) -> None:
    ds = sub.add_parser("dataset", help="training datasets").add_subparsers(
        dest="dataset_command", required=True
    )
    p = ds.add_parser("build", help="label polygons + STAC scenes -> a zarr patch dataset")
    add_label_options(p)
    p.add_argument(
        "--footprints",
        type=Path,
        default=None,
        help="labelled image footprints (default: the labels' extent)",
    )
    p.add_argument("--stac", required=True, help="STAC API URL, or a local item folder/.parquet")
    p.add_argument("--out", type=Path, required=True, help="the .zarr dataset to write")
    p.add_argument("--bands", nargs="+", default=list(L2A_BANDS), help="canonical band names")
    p.add_argument("--patch-size", type=int, default=192, metavar="PX", help="patch edge in pixels")
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        metavar="PX",
        help="step between patches in pixels (default: half the patch size)",
    )
    p.add_argument(
        "--tolerance-days",
        type=int,
        default=21,
        metavar="DAYS",
        help="largest gap between a label's date and a scene's, in days",
    )
    p.add_argument(
        "--max-cloud",
        type=float,
        default=60.0,
        metavar="PCT",
        help="skip scenes with more cloud cover than this, in %% (default: 60)",
    )
    p.add_argument(
        "--unlabelled-bbox",
        type=float,
        nargs=4,
        action="append",
        metavar=("W", "S", "E", "N"),
        help="an area of unlabelled patches: west south east north in degrees, EPSG:4326; "
        "repeat for more (default: none)",
    )
    p.add_argument(
        "--unlabelled-year",
        type=int,
        default=None,
        help="year of the unlabelled scenes (default: none; needed with --unlabelled-bbox)",
    )
    p.add_argument(
        "--dem",
        type=Path,
        default=None,
        help="DEM GeoTIFF for the elevation pretext (default: none)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the scenes each labelled image would be cut from; read and write nothing",
    )
    p.set_defaults(func=_cmd_dataset_build)


def _add_train_parsers(sub: Any) -> None:
    """``train`` and ``evaluate``."""
    p = sub.add_parser("train", help="train a model from a TOML run file")
    p.add_argument("--config", type=Path, required=True, help="the training run file (TOML)")
    p.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the run file's)"
    )
    p.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default: the run file's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages (as -q)")
    p.add_argument(
        "--cross-validate",
        action="store_true",
        help="leave-one-site-out first (sites = the image folders), choose the threshold and "
        "minimum area on training sites, then train on all and write the scores into the card",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[1], help="cross-validation seeds (default: 1)"
    )
    p.add_argument("--jobs", type=int, default=1, help="folds trained side by side (default: 1)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="pixel and object scores of weights on image/mask pairs")
    p.add_argument("--weights", type=Path, required=True, help="safetensors weights to score")
    p.add_argument("--images", type=Path, required=True, help="folder of image chips (GeoTIFF)")
    p.add_argument("--masks", type=Path, required=True, help="folder of their label masks")
    p.add_argument(
        "--json", type=Path, default=None, help="also write the scores as JSON (default: none)"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="P",
        help="slump probability 0-1 at which a pixel counts (default: the model card's)",
    )
    p.add_argument(
        "--min-area",
        type=float,
        default=None,
        metavar="M2",
        help="drop objects under this area in m2 (default: the card's min_area_m2, else 0)",
    )
    add_postprocessing_options(p)
    p.set_defaults(func=_cmd_evaluate)


def _add_service_parsers(sub: Any) -> None:
    """``inventory run`` and ``catalog serve``."""
    inv = sub.add_parser("inventory", help="yearly inventories").add_subparsers(
        dest="inventory_command", required=True
    )
    p = inv.add_parser(
        "run",
        help="map every region and year of a TOML run file into one GeoPackage; resumable, "
        "and a rerun with nothing new changes nothing",
    )
    p.add_argument("run_file", type=Path, help="the run file (see deploy/inventory.example.toml)")
    add_inventory_run_options(p)
    p.set_defaults(func=_cmd_inventory_run)

    cat = sub.add_parser("catalog", help="the embedded STAC API").add_subparsers(
        dest="catalog_command", required=True
    )
    p = cat.add_parser(
        "serve", help="serve a folder of STAC item JSONs (or a .parquet) on 127.0.0.1"
    )
    p.add_argument("source", type=Path, help="a folder of STAC item JSONs, or a .parquet")
    p.add_argument("--port", type=int, default=7822, help="loopback port to listen on")
    p.set_defaults(func=_cmd_catalog_serve)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(level=_log_level(args))
    if not args.verbose:
        _filter_dependency_warnings()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("arctic-rts: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NoScenesError as err:
        print(f"arctic-rts: error: {err}", file=sys.stderr)
        return EXIT_NOTHING_FOUND
    except (
        ArcticRTSError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    ) as err:
        print(f"arctic-rts: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        if err.errno not in _STORAGE_ERRNOS:
            return _unexpected(err, args)
        print(f"arctic-rts: error: {err}; free space or choose a writable place.", file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:
        return _unexpected(err, args)


def _unexpected(err: BaseException, args: argparse.Namespace) -> int:
    """Report a failure nobody planned for: one line on stderr, the traceback in a log file."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log = args.log_file or Path(tempfile.gettempdir()) / f"arctic-rts-{stamp}-{os.getpid()}.log"
    argv = " ".join(sys.argv)
    try:
        with open(log, "a") as f:
            f.write(f"{stamp} arctic-rts {__version__}: {argv}\n")
            f.write("".join(traceback.format_exception(err)))
        where = f"the traceback is in {log}"
    except OSError as log_err:
        where = f"the traceback could not be written to {log} ({log_err.strerror})"
    text = " ".join(str(err).split())[:300]
    print(
        f"arctic-rts: unexpected error: {type(err).__name__}: {text} ({where}; please report it)",
        file=sys.stderr,
    )
    return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
