"""The yearly inventory on Slurm through dask-jobqueue: a SLURMCluster of workers that outlive
the walltime, and ``arctic-rts inventory run`` against it.

Run it inside a small, long job (``sbatch deploy/slurm/inventory.sbatch``) from the
repository's root: it starts the Dask scheduler in this process, submits ``--jobs`` worker
jobs with the settings of ``jobqueue.yaml`` (each retires itself before its walltime and is
replaced by a new job), and runs the CLI with ``--scheduler`` set to that scheduler; every
other argument goes to ``arctic-rts inventory run`` as given::

    python deploy/slurm/inventory_jobqueue.py --jobs 4 -- deploy/inventory.example.toml \\
        --year latest --report inventory-run.json --log inventory.log --quiet

Needs the ``slurm`` extra: ``pip install "arctic-rts[slurm]"``. Its exit code is the CLI's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The workers' settings (dask config keys ``jobqueue.slurm.*``).
SETTINGS = Path(__file__).resolve().with_name("jobqueue.yaml")


def make_cluster(**overrides: Any) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` with the settings of ``jobqueue.yaml``.

    The file's values replace dask-jobqueue's defaults; values you set in your own Dask
    configuration, and ``overrides`` (SLURMCluster arguments), win over the file. The job
    script preloads mimalloc from this installation (workers share it on a cluster's file
    system) when arctic-rts finds it. No job is submitted until the cluster is scaled or made
    adaptive.
    """
    import dask.config
    import yaml
    from dask_jobqueue import SLURMCluster

    from arctic_rts.cluster import mimalloc_library

    dask.config.update_defaults(yaml.safe_load(SETTINGS.read_text()))
    prologue = list(dask.config.get("jobqueue.slurm.job-script-prologue") or [])
    library = mimalloc_library()
    if library:
        prologue.append(f"export LD_PRELOAD={library}")
    overrides.setdefault("job_script_prologue", prologue)
    return SLURMCluster(**overrides)


def inventory_argv(inventory_args: Sequence[str], scheduler: str) -> list[str]:
    """The ``arctic-rts`` arguments of the run: ``inventory run ARGS --scheduler ADDRESS``."""
    args = list(inventory_args)
    if args[:1] == ["--"]:
        args = args[1:]
    return ["inventory", "run", *args, "--scheduler", scheduler]


def main(argv: Sequence[str] | None = None) -> int:
    """Start the cluster, keep ``--jobs`` worker jobs, run the inventory; the CLI's exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="worker jobs kept (default: 4)")
    parser.add_argument("inventory_args", nargs=argparse.REMAINDER, help="-- RUN_FILE [options]")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    from arctic_rts.cli import main as cli_main

    with make_cluster() as cluster:
        cluster.adapt(minimum_jobs=args.jobs, maximum_jobs=args.jobs)
        print(f"Dask dashboard: {cluster.dashboard_link}", file=sys.stderr, flush=True)
        return cli_main(inventory_argv(args.inventory_args, cluster.scheduler_address))


if __name__ == "__main__":
    sys.exit(main())
