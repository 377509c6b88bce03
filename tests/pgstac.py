"""A real database-backed STAC API for the integration tests: stac-fastapi-pgstac on PostgreSQL
with PostGIS, started on loopback in a temporary folder and stopped afterwards.

Needs the Debian packages ``postgresql-15-postgis-3`` (``.ci/run`` installs them) and the
``pgstac`` extra; :func:`missing` says what is absent so that the tests skip with that reason.
As root, PostgreSQL (which refuses to run as root) runs as the ``postgres`` user the package
creates.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: Seconds to wait for the database and for the API to answer.
STARTUP_S = 60.0


def _bin_dir() -> Path | None:
    """The newest PostgreSQL server binaries (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(found[-1]).parent if found else None


def _version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def missing() -> str | None:
    """Why the suite cannot run here (None when it can)."""
    bins = _bin_dir()
    if bins is None:
        return "PostgreSQL is not installed (apt-get install postgresql-15-postgis-3)"
    version = bins.parent.name
    if not Path(f"/usr/share/postgresql/{version}/extension/postgis.control").is_file():
        return f"PostGIS for PostgreSQL {version} is not installed (postgresql-{version}-postgis-3)"
    for module in ("pypgstac", "stac_fastapi.pgstac", "uvicorn"):
        if importlib.util.find_spec(module.split(".")[0]) is None or (
            "." in module and importlib.util.find_spec(module) is None
        ):
            return f"{module} is not installed (pip install -e '.[pgstac]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as its own user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_db_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _collection(collection_id: str) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": f"{collection_id} (test)",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
    }


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the STAC API exited early: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"the STAC API did not answer within {STARTUP_S:.0f} s")


@contextlib.contextmanager
def pgstac_api(items: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Serve ``items`` (one collection made per ``collection`` id) from pgstac on loopback.

    Yields the API root URL; the API and the database are stopped and their folder removed
    when the block ends, also on errors.
    """
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods
    from pypgstac.migrate import Migrate

    bins = _bin_dir()
    assert bins is not None, missing()
    items = list(items)
    with tempfile.TemporaryDirectory(prefix="arctic-rts-pgstac-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        data, sockets = root / "data", root / "run"
        sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            shutil.chown(sockets, "postgres")
        db_port, api_port = _free_port(), _free_port()
        initdb = [
            str(bins / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]
        subprocess.run(_as_db_user(initdb), check=True, capture_output=True, timeout=STARTUP_S)
        options = f"-p {db_port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = [str(bins / "pg_ctl"), "-D", str(data)]
        subprocess.run(
            _as_db_user([*pg_ctl, "-l", str(root / "postgres.log"), "-o", options, "-w", "start"]),
            check=True, capture_output=True, timeout=STARTUP_S,
        )  # fmt: skip
        api = None
        try:
            dsn = f"postgresql://postgres@127.0.0.1:{db_port}/postgres"
            with PgstacDB(dsn=dsn) as db:
                Migrate(db).run_migration()
                loader = Loader(db)
                collections = sorted({str(it["collection"]) for it in items})
                loader.load_collections(iter(map(_collection, collections)), Methods.upsert)
                loader.load_items(iter(items), Methods.upsert)
            env = {
                **os.environ,
                "PGUSER": "postgres",
                "PGPASSWORD": "unused",
                "PGHOST": "127.0.0.1",
                "PGPORT": str(db_port),
                "PGDATABASE": "postgres",
            }
            log = root / "api.log"
            with log.open("wb") as out:
                api = subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app",
                     "--factory", "--host", "127.0.0.1", "--port", str(api_port)],
                    env=env, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            url = f"http://127.0.0.1:{api_port}"
            _wait_for(f"{url}/collections", api, log)
            yield url
        finally:
            if api is not None:
                api.terminate()
                try:
                    api.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    api.kill()
                    api.wait()
            subprocess.run(
                _as_db_user([*pg_ctl, "-m", "immediate", "stop"]),
                capture_output=True, timeout=STARTUP_S,
            )  # fmt: skip
