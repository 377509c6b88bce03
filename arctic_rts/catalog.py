"""The embedded STAC API: a real ``rustac serve`` process on loopback over stac-geoparquet.

A folder of STAC item JSON files (or a stac-geoparquet file) becomes a STAC API at
``http://127.0.0.1:<port>`` that pystac-client searches exactly as it searches Earth Search or
Planetary Computer, so the offline demo and the tests run the same code path as users online.

The server is ``rustac serve FILE.parquet`` with its DuckDB backend (the in-memory ndjson backend
returns no items once a CQL2 ``filter`` is given, so it is never used). DuckDB needs its bundled
``spatial`` extension under ``$HOME/.duckdb/extensions/<version>/<platform>/``; rather than touch
the user's home, each server runs with ``HOME`` pointing at a private temporary folder that links
to the extensions shipped by the ``rustac-duckdb-extensions`` package. Nothing binds beyond
127.0.0.1.

:func:`stac_endpoint` turns what a user passes as ``--stac`` (nothing, ``demo``, a folder, a
stac-geoparquet file or a URL) into the URL of an API to search.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urljoin, urlparse

from arctic_rts.config import DEMO_CATALOG, EARTH_SEARCH_URL
from arctic_rts.errors import CatalogError, ConfigError
from arctic_rts.files import atomic_write

#: Root catalog id of ``rustac serve``; search uses it to recognise the embedded API, which
#: supports CQL2 ``filter`` without declaring the conformance class.
RUSTAC_SERVER_ID = "stac-server-rs"

#: Seconds to wait for a freshly started server to answer ``GET /``.
STARTUP_TIMEOUT_S = 30.0

#: Seconds one readiness probe may take; a server whose DuckDB lacks its spatial extension hangs
#: for 30 s per request, so a probe that times out is reported, not retried forever.
_PROBE_TIMEOUT_S = 5.0

#: File name suffixes read as item JSON in a catalog folder.
_ITEM_SUFFIXES = (".json", ".geojson")

#: The local folders that the items of each catalog this process serves may point into, by
#: API URL (see :func:`served_roots`): registered while :func:`serve_catalog` runs.
_SERVED_ROOTS: dict[str, tuple[Path, ...]] = {}


def write_geoparquet(items: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write STAC items to one stac-geoparquet file (the format ``rustac serve`` reads).

    Args:
        items: STAC item dicts; every asset href must already be absolute (see
            :func:`absolute_hrefs`), since a parquet file has no location to resolve them against.
        path: Output file; its parent folder is created. Written atomically (temporary file,
            then rename), so a reader never sees half a file.

    Returns:
        The path written.

    Raises:
        CatalogError: No items, an item without an id, a relative asset href, duplicate ids in
            one collection, or rustac could not write the file.
    """
    import rustac

    path = Path(path)
    item_list = [dict(item) for item in items]
    if not item_list:
        raise CatalogError(f"No STAC items to write to {path}: give at least one item.")
    seen: set[tuple[Any, Any]] = set()
    for item in item_list:
        if item.get("type") != "Feature" or "id" not in item:
            raise CatalogError(
                f"Not a STAC item (type {item.get('type')!r}, id {item.get('id')!r}); "
                "only items (GeoJSON Features) can be written to stac-geoparquet."
            )
        key = (item.get("collection"), item["id"])
        if key in seen:
            raise CatalogError(
                f"Item {item['id']!r} appears twice in collection {item.get('collection')!r}; "
                "remove the duplicate file."
            )
        seen.add(key)
        for name, asset in item.get("assets", {}).items():
            if not is_absolute_href(str(asset.get("href", ""))):
                raise CatalogError(
                    f"Asset {name!r} of item {item['id']!r} has the relative href "
                    f"{asset.get('href')!r}; make hrefs absolute first (absolute_hrefs)."
                )
    item_list = _unify_asset_key_case(item_list)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: rustac.write_sync(str(tmp), item_list), suffix=".parquet")
    except rustac.RustacError as exc:
        raise CatalogError(f"rustac could not write {path}: {exc}") from exc
    return path


def _unify_asset_key_case(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spell asset keys that differ only in case (Earth Search ``scl``, Planetary Computer
    ``SCL``) one way across the items: the first spelling met.

    DuckDB, which serves the parquet file, matches struct fields without regard to case and
    renames the later spelling (``scl_1``), which hides the asset from every reader. Band lookup
    ignores case, so the unified keys name the same bands.

    Raises:
        CatalogError: One item has two asset keys that differ only in case.
    """
    spelling: dict[str, str] = {}
    out = []
    for item in items:
        assets = item.get("assets") or {}
        folded: dict[str, str] = {}
        for key in assets:
            other = folded.setdefault(key.lower(), key)
            if other != key:
                raise CatalogError(
                    f"Item {item['id']!r} has asset keys {other!r} and {key!r}, which differ only "
                    "in case; the embedded server cannot tell them apart: rename one."
                )
            spelling.setdefault(key.lower(), key)
        if any(spelling[k.lower()] != k for k in assets):
            item = {**item, "assets": {spelling[k.lower()]: v for k, v in assets.items()}}
        out.append(item)
    return out


def absolute_hrefs(item: Mapping[str, Any], base: str | Path) -> dict[str, Any]:
    """Return a copy of ``item`` whose relative asset hrefs are resolved against ``base``.

    Args:
        item: A STAC item dict.
        base: The folder (or URL) the relative hrefs are relative to: for an item read from
            ``dir/item.json`` that is ``dir``.

    Returns:
        A new dict; absolute hrefs (URLs, absolute paths) are left as they are.
    """
    out = json.loads(json.dumps(item))
    base_str = str(base)
    for asset in out.get("assets", {}).values():
        href = str(asset.get("href", ""))
        if not href or is_absolute_href(href):
            continue
        if "://" in base_str:
            asset["href"] = urljoin(base_str.rstrip("/") + "/", href)
        else:
            asset["href"] = str((Path(base_str) / href).resolve())
    return out


def read_items(folder: str | Path) -> list[dict[str, Any]]:
    """Read every STAC item from the ``*.json`` / ``*.geojson`` files of a folder.

    A file may hold one item, a FeatureCollection or a JSON list of items; collection and catalog
    documents are skipped. Relative asset hrefs are made absolute against the file's folder.

    Args:
        folder: The folder; it is not searched recursively.

    Returns:
        The items, in file-name order.

    Raises:
        CatalogError: The folder does not exist, a file is not valid JSON or not STAC, or the
            folder holds no items.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CatalogError(f"Catalog folder {folder} does not exist or is not a folder.")
    items: list[dict[str, Any]] = []
    for file in sorted(p for p in folder.iterdir() if p.suffix.lower() in _ITEM_SUFFIXES):
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"Cannot read STAC JSON {file}: {exc}") from exc
        for item in _items_of(doc, file):
            items.append(absolute_hrefs(item, file.parent.resolve()))
    if not items:
        raise CatalogError(
            f"No STAC items in {folder}: put item JSON files (*.json, *.geojson) there."
        )
    return items


@contextlib.contextmanager
def serve_catalog(
    source: str | Path,
    *,
    port: int | None = None,
    timeout: float = STARTUP_TIMEOUT_S,
    asset_roots: Iterable[str | Path] = (),
) -> Iterator[str]:
    """Serve a folder of STAC items or a stac-geoparquet file as a STAC API on loopback.

    A folder is converted to stac-geoparquet in a private temporary folder on every start, so
    the API always reflects the items as they are now. The server binds 127.0.0.1 only, is
    ready when the block starts, and is stopped (terminate, then kill) when it ends, also on
    exceptions. Collections are generated from the items' ``collection`` field, so searches by
    collection work.

    Example:
        >>> with serve_catalog("demo/items") as url:  # doctest: +SKIP
        ...     items = search_scenes(bbox, 2021, stac_url=url)

    Args:
        source: A folder of item JSON files, or a ``.parquet`` stac-geoparquet file.
        port: Loopback port; None picks a free one.
        timeout: Seconds to wait for the server to answer.
        asset_roots: Folders besides :func:`catalog_root` of ``source`` that the items' local
            asset hrefs may point into, while the server runs (see :func:`served_roots`).

    Yields:
        The API root URL, ``http://127.0.0.1:<port>``.

    Raises:
        CatalogError: The source is unusable, or the server did not start in time.
    """
    from arctic_rts.paging import PagingFront

    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="arctic-rts-stac-") as tmp:
        workdir = Path(tmp)
        parquet = _prepare_parquet(source, workdir)
        home = _duckdb_home(workdir)
        # rustac pages without next links, so users talk to a paging front on ``port`` that
        # forwards to rustac on a port of its own (rustac writes its links with the front's URL).
        front = PagingFront(port or 0)
        try:
            process, backend = _start_server(
                parquet, home, workdir / "server.log", front.url, timeout
            )
            roots = (catalog_root(source), *(Path(r) for r in asset_roots))
            _SERVED_ROOTS[front.url] = tuple(Path(os.path.realpath(r)) for r in roots)
            try:
                front.start(backend)
                yield front.url
            finally:
                _SERVED_ROOTS.pop(front.url, None)
                _stop(process)
        finally:
            front.close()


@contextlib.contextmanager
def stac_endpoint(stac: str | Path | None) -> Iterator[str]:
    """Yield a STAC API URL for ``stac``, serving a local catalog for the duration if needed.

    Args:
        stac: None for Earth Search v1, ``"demo"`` for the generated demo catalog, a folder of
            item JSON files or a stac-geoparquet file (served on 127.0.0.1), or an API URL.
    """
    if stac is None:
        yield EARTH_SEARCH_URL
        return
    text = str(stac)
    if text.startswith(("http://", "https://")):
        yield text
        return
    if text == DEMO_CATALOG:
        from arctic_rts.demo import DEFAULT_DEMO_ROOT, generate_demo

        source: Path = generate_demo(DEFAULT_DEMO_ROOT).items_dir
    else:
        source = Path(text)
        if not source.exists():
            raise ConfigError(f"--stac {text}: no such folder or file, and not an http(s) URL.")
    with serve_catalog(source) as url:
        yield url


def catalog_root(source: str | Path) -> Path:
    """The folder a local catalog's items may point into: the folder of item files itself (for
    a ``.parquet`` file, its folder), or the root of the generated demo catalog whose
    ``items`` folder it is (the demo's items name ``../cogs/...``)."""
    from arctic_rts.demo.manifest import MANIFEST_NAME

    source = Path(source).resolve()
    folder = source if source.is_dir() else source.parent
    if (folder.parent / MANIFEST_NAME).is_file() and folder.name == "items":
        return folder.parent
    return folder


def served_roots(url: str) -> tuple[Path, ...]:
    """The folders (real paths) that the items of the catalog this process serves at ``url``
    may point into; none for any other URL (a STAC API elsewhere names no local files)."""
    return _SERVED_ROOTS.get(url.rstrip("/"), ())


def serve_forever(
    source: str | Path,
    port: int | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve a catalog on loopback until interrupted (Ctrl-C or SIGTERM): ``catalog serve``.

    ``on_ready`` receives the API URL once the server answers (the CLI prints it).

    Args:
        source: A folder of item JSON files, or a ``.parquet`` stac-geoparquet file.
        port: Loopback port; None picks a free one.

    Raises:
        CatalogError: The source is unusable, or the server did not start or died.
    """
    if port is not None:
        check_port_free(port)
    previous = None
    is_main = _in_main_thread()
    if is_main:
        # SIGTERM becomes KeyboardInterrupt so the context manager stops the child server.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with serve_catalog(source, port=port) as url:
            if on_ready is not None:
                on_ready(url)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if is_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def check_port_free(port: int) -> None:
    """Refuse a loopback port that a server already listens on (0, any free port, passes).

    Without this check a second ``catalog serve`` on a busy port would see the other server
    answer and report success while its own server cannot bind.

    Raises:
        CatalogError: The port is out of range or in use.
    """
    if not 0 <= port < 65536:
        raise CatalogError(f"--port must be 1-65535 (0: any free port), got {port}.")
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as servers bind (SO_REUSEADDR): only a live listener counts, not closed connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            raise CatalogError(
                f"port {port} on 127.0.0.1 is in use ({err.strerror}); stop the server there or "
                "choose another --port."
            ) from None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def is_absolute_href(href: str) -> bool:
    """True for URLs (``https://``, ``s3://``, ``file://``) and absolute local paths.

    Args:
        href: An asset href.
    """
    if Path(href).is_absolute():
        return True
    scheme = urlparse(href).scheme
    # A one-letter "scheme" is a Windows drive letter, i.e. an absolute path.
    return len(scheme) > 1


def _items_of(doc: Any, file: Path) -> list[dict[str, Any]]:
    """The items in one JSON document (item, FeatureCollection or list of items)."""
    if isinstance(doc, list):
        candidates = doc
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        candidates = doc.get("features", [])
    elif isinstance(doc, dict) and doc.get("type") in ("Collection", "Catalog"):
        return []
    else:
        candidates = [doc]
    for item in candidates:
        if not isinstance(item, dict) or item.get("type") != "Feature" or "id" not in item:
            raise CatalogError(
                f"{file} holds something that is not a STAC item; keep only item, "
                "FeatureCollection or collection JSON in a catalog folder."
            )
    return list(candidates)


def _prepare_parquet(source: Path, workdir: Path) -> Path:
    """The stac-geoparquet file to serve: the source itself, or one built from its items."""
    if source.is_file() and source.suffix.lower() == ".parquet":
        return source.resolve()
    if source.is_dir():
        return write_geoparquet(read_items(source), workdir / "items.parquet")
    raise CatalogError(
        f"Catalog source {source} is neither a folder of STAC item JSON files nor a .parquet "
        "file; check the path."
    )


def _duckdb_home(workdir: Path) -> Path:
    """A private HOME whose ``.duckdb/extensions`` holds the bundled DuckDB extensions."""
    try:
        import rustac_duckdb_extensions
    except ImportError as exc:
        raise CatalogError(
            "The embedded STAC API needs the package rustac-duckdb-extensions==1.5.1.post0; "
            "install it into this environment."
        ) from exc
    extensions = Path(rustac_duckdb_extensions.extension_directory())
    if not extensions.is_dir():
        raise CatalogError(f"rustac-duckdb-extensions is installed but {extensions} is missing.")
    home = workdir / "home"
    target = home / ".duckdb" / "extensions"
    target.parent.mkdir(parents=True)
    try:
        target.symlink_to(extensions, target_is_directory=True)
    except OSError:
        # Filesystems or platforms without symlinks get a copy (a few tens of MB).
        shutil.copytree(extensions, target)
    return home


def _rustac_executable() -> str:
    """The ``rustac`` CLI of this environment: beside the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / ("rustac.exe" if os.name == "nt" else "rustac")
    if beside.is_file():
        return str(beside)
    found = shutil.which("rustac")
    if found is None:
        raise CatalogError(
            "The rustac command is missing; install rustac==0.9.9 into this environment."
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(
    parquet: Path, home: Path, log: Path, public_url: str, timeout: float
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``rustac serve`` on a free port and wait until it answers; retry on a port taken
    meanwhile. Its links name ``public_url`` (the paging front). Returns the process and its URL."""
    last_error = ""
    for _ in range(3):
        chosen = _free_port()
        url = f"http://127.0.0.1:{chosen}"
        env = dict(os.environ, HOME=str(home))
        cmd = [
            _rustac_executable(),
            "serve",
            str(parquet),
            "--addr",
            public_url,
            "--bind",
            f"127.0.0.1:{chosen}",
            "--use-duckdb",
            "true",
        ]
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_parent_death_hook(),
            )
        try:
            _wait_ready(process, url, timeout, log)
            return process, url
        except CatalogError as exc:
            _stop(process)
            last_error = str(exc)
            if "exited" not in last_error:
                break
    raise CatalogError(last_error)


def _parent_death_hook() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that has the server terminated if Python dies uncleanly.

    libc is looked up here, before the fork, so the child runs nothing but the prctl call.
    """
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return hook


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float, log: Path) -> None:
    """Poll ``GET /`` until it returns the root catalog, the process exits, or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise CatalogError(
                f"The STAC server (rustac serve) exited with code {process.returncode} before "
                f"answering: {_last_line(log)}"
            )
        try:
            with urllib.request.urlopen(url + "/", timeout=_PROBE_TIMEOUT_S) as response:
                if response.status == 200 and json.loads(response.read()).get("id"):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise CatalogError(
                f"The STAC server at {url} did not answer within {timeout:.0f} s; its log says: "
                f"{_last_line(log)} (is rustac-duckdb-extensions installed?)"
            )
        time.sleep(0.05)


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server, then kill it if it has not exited after 5 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
