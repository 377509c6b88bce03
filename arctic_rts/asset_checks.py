"""What an item from a catalog must satisfy before any of its assets is read.

A catalog is input from outside. Its asset hrefs could name any file on this machine (``file:``
URLs, ``../`` paths, symbolic links) or any host, a named pipe that blocks whoever opens it, and
its grid metadata (``proj:shape``, ``proj:transform``, ``proj:bbox``) sizes the arrays that are
built for it. :func:`check_item` is the one check of all this. It runs inside
:func:`arctic_rts.search.normalize_item`, right after relative hrefs were made absolute, so
every item a search returns has passed it; an item that fails is skipped with its reason.

The rules (:class:`AssetPolicy`):

- Only the band assets are checked (the keys the loader reads: ``B04``, ``SCL``...); their
  hrefs, and the unsigned originals that a sign hook keeps, must be http(s), s3, or a local
  path (plain or ``file://``). Other schemes (``ftp:``, ``gs:``, ``data:``...) are refused.
- A local path is resolved (``..`` and symbolic links, :func:`os.path.realpath`) and must lie
  under an allowed root: the folder of a local catalog that this process serves
  (:func:`arctic_rts.catalog.served_roots`; the demo catalog's root for its ``items`` folder)
  and the folders the user lists (``LoadConfig.asset_roots``, ``--asset-root``). A STAC API
  given as a URL names no local folder, so its local hrefs are refused unless listed.
- An existing local path must be a regular file: GDAL would block for ever opening a FIFO.
  A missing file passes here; its read fails and the scene fails with that reason.
- http(s) hrefs may name any host unless ``LoadConfig.asset_hosts`` lists some: Sentinel-2
  COGs live on other hosts than the STAC APIs that list them (Earth Search on S3, Planetary
  Computer on Azure blobs), so "the API's own host" would refuse every real catalog.
- A band's grid may reach beyond the item's footprint (a tile's grid holds slivers of data
  too), but not past :data:`GRID_FACTOR` times the footprint's extent and
  :data:`GRID_SLACK_M` on either axis.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from arctic_rts.bands import canonical_band
from arctic_rts.config import LoadConfig
from arctic_rts.errors import CatalogError

#: URL schemes whose assets may be read; a plain local path has no scheme.
REMOTE_SCHEMES = ("http", "https", "s3")

#: A band's grid may be at most this many times the item's footprint on either axis...
GRID_FACTOR = 4.0
#: ...or this many metres where that is more: a Sentinel-2 tile's grid is 109.8 km wide, and a
#: real item at the edge of an orbit has a footprint under 1 km tall inside it.
GRID_SLACK_M = 120_000.0

#: Asset field that keeps the href as the catalog gave it when a sign hook changed it
#: (:func:`arctic_rts.search.sign_item`), so that :func:`arctic_rts.load.load_scenes` can sign
#: it afresh when a block is read; checked like the href itself.
UNSIGNED_HREF = "arctic_rts:unsigned_href"


@dataclass(frozen=True)
class AssetPolicy:
    """Where the assets of a catalog's items may be read from (see the module's rules)."""

    #: Folders (real paths) local hrefs may point into; empty: no local file is allowed.
    roots: tuple[Path, ...] = ()
    #: Hosts http(s) hrefs may name, lower case; ``.example.com`` also allows its subdomains.
    #: Empty: any host.
    hosts: tuple[str, ...] = ()

    def href_problem(self, href: str) -> str | None:
        """Why ``href`` must not be read, or None when it may be."""
        parsed = urlparse(href)
        scheme = parsed.scheme.lower()
        if scheme in REMOTE_SCHEMES:
            if scheme == "s3" or not self.hosts or _host_allowed(parsed.hostname, self.hosts):
                return None
            return f"host {parsed.hostname!r} is not among the allowed asset hosts"
        if scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                return f"a file URL on another host ({parsed.netloc!r})"
            path = unquote(parsed.path)
        elif scheme and len(scheme) > 1:  # one letter: a Windows drive
            return f"the URL scheme {scheme!r} (only http, https, s3 and local files are read)"
        else:
            path = href
        if not os.path.isabs(path):
            return "a relative path with nothing to resolve it against"
        return self.local_problem(path)

    def local_problem(self, path: str) -> str | None:
        """Why the local ``path`` must not be read (outside the roots, not a regular file)."""
        real = os.path.realpath(path)
        if not any(_is_within(real, root) for root in self.roots):
            where = ", ".join(str(r) for r in self.roots) or "none: pass --asset-root"
            return f"a local file outside the allowed folders ({where})"
        return non_regular_problem(real)


def asset_policy(stac_url: str, load: LoadConfig | None = None) -> AssetPolicy:
    """The policy for items from the STAC API at ``stac_url``: the folder of the local catalog
    served there (if this process serves one), plus ``load``'s ``asset_roots`` and hosts."""
    from arctic_rts.catalog import served_roots

    load = load or LoadConfig()
    listed = tuple(Path(os.path.realpath(Path(r).expanduser())) for r in load.asset_roots)
    hosts = tuple(h.lower().removeprefix("*") for h in load.asset_hosts)
    return AssetPolicy(roots=(*served_roots(stac_url), *listed), hosts=hosts)


def check_item(item: Mapping[str, Any], policy: AssetPolicy) -> None:
    """Refuse an item whose band assets must not be read, or whose grid does not fit its
    footprint (see the module's rules). ``item`` has absolute hrefs (``normalize_item``).

    Raises:
        CatalogError: Naming the asset, the href and why.
    """
    for key, asset in item.get("assets", {}).items():
        if canonical_band(key) != key:
            continue
        for href in {asset.get("href"), asset.get(UNSIGNED_HREF)} - {None}:
            problem = policy.href_problem(str(href))
            if problem:
                raise CatalogError(f"asset {key} href {_short(str(href))} is {problem}")
    problem = grid_problem(item)
    if problem:
        raise CatalogError(problem)


def non_regular_problem(path: str) -> str | None:
    """Why a local file must not be opened: it exists and is not a regular file (a FIFO, a
    device, a folder), which GDAL could block on or misread. None for a regular or missing one.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or unreadable: the read fails with GDAL's own reason
    if stat.S_ISREG(mode):
        return None
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "not a regular file"
    return f"{kind}: {path}"


def local_paths(hrefs: Iterable[str]) -> list[str]:
    """The local paths among ``hrefs`` (plain paths and ``file:`` URLs)."""
    out = []
    for href in hrefs:
        parsed = urlparse(href)
        if parsed.scheme.lower() == "file":
            out.append(unquote(parsed.path))
        elif len(parsed.scheme) <= 1:
            out.append(href)
    return out


def grid_problem(item: Mapping[str, Any]) -> str | None:
    """Why a band's grid (``proj:shape`` + ``proj:transform``, or ``proj:bbox``) is far larger
    than the item's footprint (``geometry``, else ``bbox``), or None. Items without a CRS or
    footprint are left to the loader, which needs the former."""
    epsg = item.get("properties", {}).get("proj:epsg")
    extent = _footprint_extent(item, epsg) if epsg else None
    if extent is None:
        return None
    for key, asset in item.get("assets", {}).items():
        if canonical_band(key) != key:
            continue
        found = asset_bounds(asset, item)
        if found is None:
            continue
        x0, y0, x1, y1 = found[1]
        for size, fp, axis in ((x1 - x0, extent[0], "wide"), (y1 - y0, extent[1], "tall")):
            if size > max(GRID_FACTOR * fp, GRID_SLACK_M):
                return (
                    f"asset {key}'s grid (proj:shape/proj:transform/proj:bbox) is "
                    f"{size / 1000:.0f} km {axis}, far more than the item's footprint "
                    f"({fp / 1000:.1f} km); its metadata is wrong"
                )
    return None


def asset_bounds(
    asset: Mapping[str, Any], item: Mapping[str, Any]
) -> tuple[float, tuple[float, float, float, float]] | None:
    """(pixel size, (xmin, ymin, xmax, ymax)) of one asset in the item's CRS, from its (or the
    item's) ``proj:transform`` and ``proj:shape``, else ``proj:bbox``; None when it does not say.
    """
    props = item.get("properties", {})
    transform = asset.get("proj:transform") or props.get("proj:transform")
    shape = asset.get("proj:shape") or props.get("proj:shape")
    if transform and shape:
        a, _, c, _, e, f = (float(v) for v in transform[:6])
        rows, cols = int(shape[0]), int(shape[1])
        x0, x1 = sorted((c, c + a * cols))
        y0, y1 = sorted((f, f + e * rows))
        return abs(a), (x0, y0, x1, y1)
    box = asset.get("proj:bbox") or props.get("proj:bbox")
    if box and len(box) == 4:
        # Without a transform the pixel size is unknown; rank such assets after known ones.
        return float("inf"), (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    return None


def _footprint_extent(item: Mapping[str, Any], epsg: Any) -> tuple[float, float] | None:
    """Width and height in metres of the item's footprint in its own CRS (``proj:epsg``)."""
    import numpy as np
    import shapely
    from pyproj import Transformer
    from pyproj.exceptions import CRSError
    from shapely.geometry import shape

    try:
        if item.get("geometry"):
            coords = shapely.get_coordinates(shape(item["geometry"]))
        elif item.get("bbox") and len(item["bbox"]) >= 4:
            w, s, e, n = (float(v) for v in item["bbox"][:4])
            coords = np.array([[w, s], [w, n], [e, s], [e, n]])
        else:
            return None
        to_grid = Transformer.from_crs(4326, int(epsg), always_xy=True)
        xs, ys = to_grid.transform(coords[:, 0], coords[:, 1])
    except (CRSError, ValueError, TypeError, AttributeError, shapely.errors.ShapelyError):
        return None  # an unusable footprint or CRS is for the loader to report
    xs, ys = np.asarray(xs), np.asarray(ys)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return None
    return float(xs.max() - xs.min()), float(ys.max() - ys.min())


def _host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    host = (host or "").lower().rstrip(".")
    return any(host in (a, a.lstrip(".")) or (a[:1] == "." and host.endswith(a)) for a in allowed)


def _is_within(path: str, root: Path) -> bool:
    root_str = str(root)
    return path == root_str or path.startswith(root_str.rstrip(os.sep) + os.sep)


def _short(href: str) -> str:
    return repr(href if len(href) <= 120 else href[:117] + "...")
