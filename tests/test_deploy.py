"""The recipes of deploy/ for scheduled yearly runs, each checked here without the system it
targets: every command line parses with the real CLI parser, the run files load, the unit files
pass ``systemd-analyze verify``, the manifests parse as YAML and agree (image, scheduler
address, volumes, resources), a real SLURMCluster renders the worker job script, and the
container build runs the steps of ``make install`` and ``make demo``.
"""

from __future__ import annotations

import configparser
import datetime as dt
import importlib.util
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from arctic_rts import __version__
from arctic_rts.cli import build_parser
from arctic_rts.config import latest_season_year
from arctic_rts.runfile import read_inventory_run

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
IMAGE = f"ghcr.io/arctic-rts/arctic-rts:{__version__}"
#: What every scheduled run passes besides its run file (the yearly rule, a report, a log).
SCHEDULED = {"year": "latest", "years": None, "dry_run": False}


def _parse_run(argv: list[str]) -> Any:
    """``arctic-rts ARGV`` as the CLI parses it; must be an ``inventory run`` of a year."""
    args = build_parser().parse_args(argv)
    assert args.command == "inventory" and args.inventory_command == "run"
    for key, value in SCHEDULED.items():
        assert getattr(args, key) == value, key
    assert args.report is not None and args.log is not None and args.quiet
    return args


def _cli_argv(command: str) -> list[str]:
    """The arguments after the ``arctic-rts`` executable of a shell command (redirections cut)."""
    words = shlex.split(command)
    words = words[: next((i for i, w in enumerate(words) if w.startswith((">", "2>"))), None)]
    assert Path(words[0]).name == "arctic-rts", words[0]
    return words[1:]


# ---------------------------------------------------------------------------------------------
# One machine: cron and systemd


def test_cron_line_is_a_valid_yearly_entry_of_the_cli() -> None:
    lines = [ln for ln in (DEPLOY / "cron" / "arctic-rts").read_text().splitlines() if ln.strip()]
    entries = [ln for ln in lines if not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(entries) == 1
    minute, hour, day, month, weekday, user, command = entries[0].split(maxsplit=6)
    assert (int(minute), int(hour), int(day), int(month), weekday) == (30, 6, 15, 9, "*")
    assert user == "arctic"
    assert "%" not in command  # cron would cut the command there
    _parse_run(_cli_argv(command))
    # On that date `latest` is the same year: its season is over.
    assert latest_season_year(today=dt.date(2027, int(month), int(day))) == 2027


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_systemd_service_and_timer() -> None:
    service = _unit(DEPLOY / "systemd" / "arctic-rts-inventory.service")
    timer = _unit(DEPLOY / "systemd" / "arctic-rts-inventory.timer")
    assert service["Service"]["Type"] == "oneshot"
    args = _parse_run(_cli_argv(service["Service"]["ExecStart"]))
    assert Path(service["Service"]["WorkingDirectory"]) == args.report.parent
    assert service["Service"]["RestartPreventExitStatus"] == "2"  # bad input is not retried
    assert timer["Timer"]["Unit"] == "arctic-rts-inventory.service"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["OnCalendar"] == "*-09-15 06:30:00 UTC"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` with ExecStart pointed at this installation's arctic-rts."""
    exe = shutil.which("arctic-rts", path=str(Path(shutil.which("python") or "").parent))
    exe = exe or str(ROOT / ".venv" / "bin" / "arctic-rts")
    for name in ("arctic-rts-inventory.service", "arctic-rts-inventory.timer"):
        text = (DEPLOY / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/arctic-rts/venv/bin/arctic-rts", exe))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(map(str, tmp_path.iterdir()))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    calendar = subprocess.run(
        ["systemd-analyze", "calendar", "*-09-15 06:30:00 UTC"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Next elapse:" in calendar.stdout and "-09-15 06:30:00 UTC" in calendar.stdout


# ---------------------------------------------------------------------------------------------
# Kubernetes: DaskCluster + CronJob + storage


def _manifests() -> dict[str, dict[str, Any]]:
    """Every document under deploy/kubernetes by kind (one of each kind)."""
    docs: dict[str, dict[str, Any]] = {}
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()):
            assert doc["kind"] not in docs
            docs[doc["kind"]] = doc
    return docs


def _containers(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    cluster, cron = docs["DaskCluster"]["spec"], docs["CronJob"]["spec"]
    return [
        *cluster["scheduler"]["spec"]["containers"],
        *cluster["worker"]["spec"]["containers"],
        *cron["jobTemplate"]["spec"]["template"]["spec"]["containers"],
    ]


def test_kubernetes_manifests_agree(tmp_path: Path) -> None:
    docs = _manifests()
    assert set(docs) == {
        "Namespace",
        "PersistentVolumeClaim",
        "ConfigMap",
        "DaskCluster",
        "DaskAutoscaler",
        "CronJob",
    }
    namespace = docs["Namespace"]["metadata"]["name"]
    assert {d["metadata"].get("namespace", namespace) for d in docs.values()} == {namespace}
    # One image everywhere, the version of this package (Dask refuses mismatched versions).
    assert {c["image"] for c in _containers(docs)} == {IMAGE}
    for c in _containers(docs):
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]

    cluster = docs["DaskCluster"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    assert docs["DaskAutoscaler"]["spec"]["cluster"] == cluster["metadata"]["name"]
    worker = cluster["spec"]["worker"]["spec"]["containers"][0]
    assert worker["args"][:2] == ["dask", "worker"]
    nthreads = int(worker["args"][worker["args"].index("--nthreads") + 1])
    assert int(worker["resources"]["limits"]["cpu"]) == nthreads
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["ARCTIC_RTS_TORCH_THREADS"] == "1"
    assert (ROOT / Path(env["DASK_CONFIG"]).relative_to("/opt/arctic-rts/src")).is_dir()
    service_port = next(
        p["port"]
        for p in cluster["spec"]["scheduler"]["service"]["ports"]
        if p["name"] == "tcp-comm"
    )

    cron = docs["CronJob"]["spec"]
    assert cron["schedule"] == "30 6 15 9 *" and cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "arctic-rts"
    args = _parse_run(container["args"][1:])
    # The operator names the scheduler's service <cluster>-scheduler.
    assert args.scheduler == (
        f"tcp://{cluster['metadata']['name']}-scheduler.{namespace}:{service_port}"
    )
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert args.report.parent == args.log.parent == mounts["data"]

    # The run file of the ConfigMap loads, and its GeoPackage lies on the volume.
    config_map = docs["ConfigMap"]
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert args.run_file.parent == mounts["config"]
    run_file = tmp_path / args.run_file.name
    run_file.write_text(config_map["data"][args.run_file.name])
    cfg = read_inventory_run(run_file)
    assert Path(cfg.out).parent == mounts["data"] and cfg.map.cluster.scheduler is None


# ---------------------------------------------------------------------------------------------
# Slurm through dask-jobqueue


def _jobqueue_module() -> Any:
    path = DEPLOY / "slurm" / "inventory_jobqueue.py"
    spec = importlib.util.spec_from_file_location("inventory_jobqueue", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _minutes(text: str) -> float:
    """``225m``, ``4h``, ``30s`` or Slurm's ``HH:MM:SS`` in minutes."""
    if ":" in text:
        h, m, s = (int(v) for v in text.split(":"))
        return h * 60 + m + s / 60
    value, unit = float(text[:-1]), text[-1]
    return value * {"s": 1 / 60, "m": 1, "h": 60}[unit]


def test_slurm_jobqueue_workers_retire_before_their_walltime() -> None:
    pytest.importorskip("dask_jobqueue")
    module = _jobqueue_module()
    with module.make_cluster(scheduler_options={"dashboard_address": ":0"}) as cluster:
        script = cluster.job_script()
        address = cluster.scheduler_address
    directives = dict(
        re.match(r"#SBATCH ([^\s=]+)(?:[ =](.*))?", ln).groups()  # type: ignore[union-attr]
        for ln in script.splitlines()
        if ln.startswith("#SBATCH")
    )
    walltime = _minutes(directives["-t"])
    command = next(ln for ln in script.splitlines() if "distributed.cli.dask_worker" in ln)
    words = shlex.split(command)
    assert address in words
    lifetime = _minutes(words[words.index("--lifetime") + 1])
    stagger = _minutes(words[words.index("--lifetime-stagger") + 1])
    assert lifetime + stagger <= walltime - 5  # retired gracefully, minutes before the kill
    assert "--lifetime-restart" not in words  # replaced by a new job, not restarted in this one
    assert words[words.index("--nthreads") + 1] == directives["--cpus-per-task"]
    assert "export ARCTIC_RTS_TORCH_THREADS=1" in script
    assert 'export DASK_CONFIG="${SLURM_SUBMIT_DIR}/deploy/dask"' in script
    assert (DEPLOY / "dask" / "arctic-rts.yaml").is_file()
    from arctic_rts.cluster import mimalloc_library

    library = mimalloc_library()
    assert library is None or f"export LD_PRELOAD={library}" in script


def test_slurm_job_runs_the_inventory_against_its_cluster() -> None:
    module = _jobqueue_module()
    line = next(
        ln
        for ln in (DEPLOY / "slurm" / "inventory.sbatch").read_text().splitlines()
        if ln.startswith("python ")
    )
    words = shlex.split(line)
    assert words[:2] == ["python", "deploy/slurm/inventory_jobqueue.py"]
    assert (ROOT / words[1]).is_file()
    separator = words.index("--")
    argv = module.inventory_argv(words[separator:], "tcp://10.0.0.1:40000")
    args = _parse_run(argv)
    assert args.scheduler == "tcp://10.0.0.1:40000"
    assert read_inventory_run(ROOT / args.run_file).years  # the run file is the example's


# ---------------------------------------------------------------------------------------------
# The container: CPU and CUDA variants, the steps of `make install` and `make demo`


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target's recipe (the ``$(STAMP)`` one for ``install``)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_container_build_mirrors_make_install_and_make_demo() -> None:
    steps = _instructions(DEPLOY / "container" / "Containerfile")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_pin = next(d for d in pyproject["dependencies"] if d.startswith("torch=="))
    python = pyproject["requires-python"].removeprefix(">=")

    # Two variants, each with its torch index and extras; the extras exist.
    bases = {
        args.split(" AS ")[1]: args for word, args in steps if word == "FROM" and " AS " in args
    }
    assert set(bases) == {"base-cpu", "base-cuda"}
    assert python in bases["base-cpu"] and "cuda" in bases["base-cuda"]
    envs = [args for word, args in steps if word == "ENV" and "ARCTIC_RTS_EXTRAS=" in args]
    extras = [set(re.search(r"ARCTIC_RTS_EXTRAS=(\S+)", e)[1].split(",")) for e in envs]  # type: ignore[index]
    assert extras[0] < extras[1] and extras[1] - extras[0] == {"gpu"}
    assert extras[1] <= set(pyproject["optional-dependencies"])
    assert "download.pytorch.org/whl/cpu" in envs[0]

    # make install, then make demo, in that order.
    runs = [args for word, args in steps if word == "RUN"]
    make = [c.replace("$(BIN)/", "") for c in _make_recipe("$(STAMP)") + _make_recipe("demo")]
    assert make[0] == "pip install --quiet torch==2.13.0" == f"pip install --quiet {torch_pin}"
    expected = [
        f"python{python} -m venv",
        "pip install --quiet --no-cache-dir --upgrade pip",
        torch_pin,
        'pip install --quiet --no-cache-dir ".[${ARCTIC_RTS_EXTRAS}]"',
        make[-1],  # arctic-rts demo
    ]
    where = [next(i for i, r in enumerate(runs) if step in r) for step in expected]
    assert where == sorted(where), runs
    assert make[-1] == "arctic-rts demo" and "-e '.[dev]'" in make[1]
    # Every file the build copies exists, and the image's command is the CLI.
    for word, args in steps:
        if word == "COPY":
            for src in args.split()[:-1]:
                assert (ROOT / src).exists(), src
    assert steps[-1] == ("CMD", '["arctic-rts", "--help"]')
    assert IMAGE in (DEPLOY / "container" / "Containerfile").read_text()
