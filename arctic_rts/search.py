"""Find Sentinel-2 scenes through a STAC API and pick one per MGRS tile.

``search_scenes`` asks any STAC API (Earth Search, Planetary Computer, the embedded API of
:mod:`arctic_rts.catalog`) through pystac-client with a CQL2 ``filter``; ``select_scenes`` keeps
the least cloudy acquisition per MGRS tile; ``normalize_item`` is the one place where providers'
differences (asset keys, missing ``raster:bands``, ``proj:code``, relative hrefs) are resolved, so
every later stage sees the same item shape.
"""

from __future__ import annotations

import calendar
import contextlib
import copy
import datetime as dt
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pystac.errors import STACError, STACTypeError
from pystac_client import Client
from pystac_client.exceptions import APIError

from arctic_rts.asset_checks import UNSIGNED_HREF, AssetPolicy, asset_policy, check_item
from arctic_rts.bands import RESOLUTION_M, asset_resolution, canonical_band
from arctic_rts.catalog import RUSTAC_SERVER_ID, absolute_hrefs, is_absolute_href
from arctic_rts.config import (
    NetworkConfig,
    SearchConfig,
    bbox_parts,
    validate_bbox,
    validate_year,
)
from arctic_rts.errors import CatalogError, NoScenesError, SkippedInputWarning

#: Digital numbers per unit reflectance of Sentinel-2 L1C/L2A products.
_QUANTIFICATION = 1e-4

#: From processing baseline 04.00 on (25 Jan 2022), products carry an offset of -1000 DN.
_OFFSET_BASELINE = (4, 0)
_BASELINE_OFFSET = -0.1

#: Frozen, hence safe as a shared default argument.
_DEFAULT_CONFIG = SearchConfig()

#: What pystac-client raises for an unreachable, failing or non-STAC endpoint (it wraps HTTP
#: errors in APIError; odd documents surface as pystac or JSON errors).
_API_ERRORS = (APIError, STACError, STACTypeError, OSError, ValueError, KeyError)

#: Page size asked of the API (Earth Search allows up to 250 per page).
_PAGE_SIZE = 100

#: An MGRS tile code such as 29RKH or 06VVN inside an id, optionally prefixed with T.
_MGRS_IN_ID = re.compile(r"(?:^|_)T?(\d{1,2}[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V])(?=_|$)")
#: The processing baseline inside an ESA product id: ..._N0510_...
_BASELINE_IN_ID = re.compile(r"_N(\d{2})(\d{2})_")


def search_scenes(
    bbox: Sequence[float],
    year: int,
    *,
    stac_url: str,
    config: SearchConfig = _DEFAULT_CONFIG,
    sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    network: NetworkConfig | None = None,
    assets: AssetPolicy | None = None,
) -> list[dict[str, Any]]:
    """Search a STAC API for the season's Sentinel-2 scenes over a box.

    One request per month of ``config.months`` (``datetime`` limited to that month of ``year``),
    each with the CQL2-JSON filter ``eo:cloud_cover <= config.max_cloud_cover``, the collection
    and the bbox; results are merged by item id. Months are sent as separate date ranges rather
    than an OR inside the filter because the embedded server (rustac 0.9.9) drops the
    parentheses of nested AND/OR filters and returns wrong items; a flat AND works everywhere.

    Args:
        bbox: WGS84 ``(west, south, east, north)``; ``west > east`` crosses the antimeridian
            and is searched as its two halves.
        year: Calendar year of the acquisitions.
        stac_url: STAC API root, e.g. :data:`arctic_rts.config.EARTH_SEARCH_URL` or the URL
            yielded by :func:`arctic_rts.catalog.serve_catalog`.
        config: Collection, months, cloud limit and item cap.
        sign: Applied to every normalized item; returns the item to use (or modifies it in
            place and returns None): e.g. Planetary Computer's ``sign_inplace``, which appends
            SAS tokens to asset hrefs. Each href it changes keeps its original under
            :data:`UNSIGNED_HREF`, so that ``load_scenes(..., sign=sign)`` signs it again when
            a block is read (tokens that expire, as Planetary Computer's do after about 45
            minutes, then never reach a long run's reads).
        network: Timeouts and retries of the requests (see :mod:`arctic_rts.net`).
        assets: Where the items' assets may be read from; an item whose band hrefs or grid
            break it is skipped, with its reason, in one warning that counts them (see
            :mod:`arctic_rts.asset_checks`). None: :func:`~arctic_rts.asset_checks.asset_policy`
            of ``stac_url`` (the folder of a catalog this process serves there, any host).

    Returns:
        Normalized items (see :func:`normalize_item`), sorted by datetime then id.

    Raises:
        ConfigError: Bad bbox or year.
        CatalogError: The API cannot be reached or answers with an error.
        NoScenesError: Nothing matched; the message says what was searched.
    """
    box = validate_bbox(list(bbox))
    year = validate_year(year)
    client = _open_client(stac_url, network)
    found: dict[str, dict[str, Any]] = {}
    truncated: list[str] = []
    cloud_filter = {
        "op": "<=",
        "args": [{"property": "eo:cloud_cover"}, config.max_cloud_cover],
    }
    # A box across the antimeridian is searched as its two halves: not every API takes
    # west > east (rustac does not).
    windows = [(m, part) for m in sorted(set(config.months)) for part in bbox_parts(box)]
    for month, part in windows:
        remaining = config.max_items - len(found)
        if remaining <= 0:
            break
        last_day = calendar.monthrange(year, month)[1]
        interval = f"{year}-{month:02d}-01T00:00:00Z/{year}-{month:02d}-{last_day}T23:59:59.999Z"
        try:
            search = client.search(
                collections=[config.collection],
                bbox=list(part),
                datetime=interval,
                filter=cloud_filter,
                filter_lang="cql2-json",
                max_items=remaining,
                limit=min(_PAGE_SIZE, remaining),
            )
            for page in search.pages_as_dicts():
                features = page.get("features") or []
                for raw in features:
                    found.setdefault(str(raw["id"]), raw)
                if len(features) >= min(_PAGE_SIZE, remaining) and not _has_next(page):
                    truncated.append(interval)
        except _API_ERRORS as exc:
            raise CatalogError(f"Search at {stac_url} failed: {_one_line(exc)}") from exc
    if truncated and len(found) < config.max_items:
        warnings.warn(
            f"{stac_url} answered a full page without a next link for {', '.join(truncated)}, "
            "so more matching scenes may exist than were returned; search shorter periods or "
            "a smaller bbox, or use an API that pages.",
            SkippedInputWarning,
            stacklevel=2,
        )
    if len(found) >= config.max_items:
        warnings.warn(
            f"The search stopped at SearchConfig.max_items = {config.max_items} items, so some "
            "scenes may be missing; narrow the bbox or raise max_items.",
            SkippedInputWarning,
            stacklevel=2,
        )
    if not found:
        months = ", ".join(calendar.month_abbr[m] for m in sorted(set(config.months)))
        raise NoScenesError(
            f"No scenes in collection {config.collection!r} at {stac_url} for bbox "
            f"{list(box)} in {months} {year} with cloud cover <= {config.max_cloud_cover}%; "
            "widen the months, the cloud limit or the bbox."
        )
    policy = assets if assets is not None else asset_policy(stac_url)
    items = _normalize_found(found.values(), sign, policy)
    return sorted(items, key=lambda d: (str(d["properties"].get("datetime")), str(d["id"])))


def sign_item(
    item: dict[str, Any], sign: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> dict[str, Any]:
    """Apply a sign hook to a normalized item; each changed href keeps its unsigned original.

    A hook that works in place and returns None is accepted too.
    """
    unsigned = {k: a.get(UNSIGNED_HREF, a.get("href")) for k, a in item["assets"].items()}
    signed = sign(item)
    out = signed if signed is not None else item
    for key, asset in out.get("assets", {}).items():
        if key in unsigned and asset.get("href") != unsigned[key]:
            asset[UNSIGNED_HREF] = unsigned[key]
    return out


def sign_href(sign: Callable[[dict[str, Any]], dict[str, Any] | None], href: str) -> str:
    """Sign one href through an item-level sign hook (it sees a one-asset item)."""
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "arctic-rts-read",
        "properties": {},
        "geometry": None,
        "links": [],
        "assets": {"data": {"href": href}},
    }
    signed = sign(item)
    return str((signed if signed is not None else item)["assets"]["data"]["href"])


def _normalize_found(
    found: Iterable[dict[str, Any]],
    sign: Callable[[dict[str, Any]], dict[str, Any]] | None,
    policy: AssetPolicy,
) -> list[dict[str, Any]]:
    """Normalise, check and sign each item; one that cannot be normalised or whose assets must
    not be read is skipped, counted in one warning, and does not abort the search (unless
    nothing is left)."""
    items: list[dict[str, Any]] = []
    skipped: list[str] = []
    for raw in found:
        try:
            item = normalize_item(raw, policy=policy)
        except (CatalogError, TypeError, ValueError, AttributeError) as exc:
            skipped.append(f"{raw.get('id')!r} ({_one_line(exc)})")
            continue
        items.append(sign_item(item, sign) if sign is not None else item)
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} of {len(skipped) + len(items)} item(s) that cannot be "
            f"used, e.g. {skipped[0]}.",
            SkippedInputWarning,
            stacklevel=3,
        )
    if not items:
        raise NoScenesError(
            f"None of the {len(skipped)} item(s) found can be used, e.g. {skipped[0]}; check "
            "the catalog's items."
        )
    return items


def select_scenes(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Keep one scene per MGRS tile: the least cloudy one.

    Ties are broken, in this order, by (1) lower ``eo:cloud_cover`` (a missing value counts as
    100 %), (2) the later acquisition ``datetime`` (later in the thaw season shows slumps with
    less snow), (3) the smaller item id, so the choice never depends on the order of ``items``.

    Args:
        items: STAC item dicts (normalized or raw).

    Returns:
        The chosen items (shallow copies), sorted by MGRS tile.

    Raises:
        CatalogError: An item's MGRS tile cannot be told (see :func:`mgrs_tile`).
    """
    best: dict[str, Mapping[str, Any]] = {}
    for item in items:
        tile = mgrs_tile(item)
        if tile not in best or _preference(item) < _preference(best[tile]):
            best[tile] = item
    return [dict(best[tile]) for tile in sorted(best)]


def mgrs_tile(item: Mapping[str, Any]) -> str:
    """The MGRS tile code of an item, e.g. ``"06VVN"`` (zone always two digits).

    Read from ``s2:mgrs_tile`` (Planetary Computer), ``mgrs:utm_zone`` + ``mgrs:latitude_band`` +
    ``mgrs:grid_square`` (Earth Search v1), ``grid:code`` (``MGRS-29RKH``), the
    ``sentinel:*`` triplet (Earth Search v0), or the item id, in that order.

    Raises:
        CatalogError: None of these is present.
    """
    props = item.get("properties", {})
    if props.get("s2:mgrs_tile"):
        return _pad_zone(str(props["s2:mgrs_tile"]))
    for prefix in ("mgrs:", "sentinel:"):
        zone = props.get(f"{prefix}utm_zone")
        band = props.get(f"{prefix}latitude_band")
        square = props.get(f"{prefix}grid_square")
        if zone is not None and band and square:
            return f"{int(zone):02d}{band}{square}"
    code = str(props.get("grid:code", ""))
    if code.startswith("MGRS-"):
        return _pad_zone(code.removeprefix("MGRS-"))
    match = _MGRS_IN_ID.search(str(item.get("id", "")))
    if match:
        return _pad_zone(match.group(1))
    raise CatalogError(
        f"Cannot tell the MGRS tile of item {item.get('id')!r}: it has no s2:mgrs_tile, mgrs:*, "
        "grid:code or tile code in its id."
    )


def normalize_item(
    item: Mapping[str, Any],
    *,
    base: str | Path | None = None,
    policy: AssetPolicy | None = None,
) -> dict[str, Any]:
    """Return a copy of a provider's item in the one shape every later stage reads.

    - Band assets are keyed by canonical names (``red`` -> ``B04``, ``scl`` -> ``SCL``); other
      assets keep their keys unless a band already took the name.
    - Relative asset hrefs become absolute, against ``base`` or else the item's ``self`` link.
    - ``properties["proj:epsg"]`` is restored from ``proj:code`` (pystac >= 1.12 rewrites it;
      stackstac reads only ``proj:epsg``); assets' ``proj:code`` likewise.
    - Every band asset carries ``raster:bands: [{"scale": s, "offset": o, "nodata": 0}]``: kept
      from the item where given (Earth Search), else derived from ``s2:processing_baseline``
      (Planetary Computer): scale 1e-4, offset -0.1 from baseline 04.00 on, 0 before; SCL gets
      scale 1, offset 0. Items that Earth Search flags ``sentinel:boa_offset_applied`` or
      ``earthsearch:boa_offset_applied: true`` get offset 0: their pixels already carry it.
    - Asset keys with a resolution suffix (``B04_10m``) count as the band; of several
      resolutions of one band the native one is kept as the band.
    - ``properties["s2:mgrs_tile"]`` is set (see :func:`mgrs_tile`).
    - ``properties["datetime"]`` is written one way, UTC with ``Z`` and microseconds where not
      0 (``2020-02-19T11:34:25.405000Z``, ``2021-07-15T10:00:00Z``), whatever the API's
      spelling (pgstac answers ``...25.405+00:00``); a value that does not parse is kept.
    - With ``policy``, the band assets' hrefs, once absolute, and their grids are checked
      (:func:`arctic_rts.asset_checks.check_item`): the one place where a catalog's hrefs
      are judged before anything reads them.

    Normalizing a normalized item changes nothing.

    Args:
        item: A STAC item dict (not modified).
        base: Folder or URL that relative hrefs are relative to.
        policy: Where assets may be read from; None checks nothing (items the caller built).

    Returns:
        The normalized copy.

    Raises:
        CatalogError: A relative href with nothing to resolve it against, reflectance bands
            without ``raster:bands`` and no processing baseline to derive them from, or (with
            ``policy``) an href or grid that the policy refuses.
    """
    if item.get("id") is None:
        raise CatalogError("A STAC item without an id cannot be used; check the source.")
    if "\x00" in str(item["id"]):
        # GDAL and SQLite end text at a NUL: the id would be stored cut short in the inventory
        raise CatalogError(f"Item id {item['id']!r} holds a NUL character; fix the catalog.")
    out = copy.deepcopy(dict(item))
    props = out.setdefault("properties", {})
    _restore_epsg(props)
    if isinstance(props.get("datetime"), str):
        props["datetime"] = _utc_stamp(props["datetime"])
    out["assets"] = _canonical_assets(out.get("assets", {}))
    for asset in out["assets"].values():
        _restore_epsg(asset)
    out = _resolve_hrefs(out, base)
    if policy is not None:
        check_item(out, policy)
    baseline: tuple[int, int] | None = None
    harmonised = _boa_offset_applied(props)
    for name, asset in out["assets"].items():
        band = canonical_band(name)
        if band != name:
            continue
        given = (asset.get("raster:bands") or [{}])[0]
        entry = dict(given)
        if band == "SCL":
            entry.setdefault("scale", 1.0)
            entry.setdefault("offset", 0.0)
        elif "scale" not in given or "offset" not in given:
            if baseline is None:
                baseline = _processing_baseline(out)
            entry.setdefault("scale", _QUANTIFICATION)
            entry.setdefault("offset", _BASELINE_OFFSET if baseline >= _OFFSET_BASELINE else 0.0)
        if harmonised and band != "SCL":
            entry["offset"] = 0.0
        entry.setdefault("nodata", 0)
        asset["raster:bands"] = [entry, *(asset.get("raster:bands") or [])[1:]]
    # An item with no tile code can still be loaded; only select_scenes needs the tile.
    with contextlib.suppress(CatalogError):
        props["s2:mgrs_tile"] = mgrs_tile(out)
    return out


def _utc_stamp(value: str) -> str:
    """An ISO 8601 timestamp as UTC with ``Z`` (microseconds when not 0); others unchanged."""
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    stamp = when.astimezone(dt.UTC).isoformat()
    return stamp.replace("+00:00", "Z")


def _preference(item: Mapping[str, Any]) -> tuple[float, str, str]:
    """Sort key: smaller is better (least cloud, then latest datetime, then smallest id)."""
    props = item.get("properties", {})
    cloud = props.get("eo:cloud_cover")
    cloud_value = 100.0 if cloud is None else float(cloud)
    stamp = str(props.get("datetime") or props.get("start_datetime") or "")
    # Inverting the characters of an ISO timestamp makes later times sort first.
    later_first = "".join(chr(0x10FFFF - ord(c)) for c in stamp)
    return (cloud_value, later_first, str(item.get("id")))


#: Earth Search's flags (v0 ``sentinel:``, v1 ``earthsearch:``) saying that it already added
#: BOA_ADD_OFFSET to the pixel values of its COGs (baseline >= 04.00 harmonised to the old
#: range), so reflectance is DN * 1e-4 with no offset. Its maintainers call the flag "the
#: truth" where ``raster:bands`` still says -0.1 (Element84/earth-search#9,
#: cirrus-geo/cirrus-earth-search#21). A false or missing flag proves nothing (items tagged
#: false whose offset was applied are known: cirrus-earth-search#33, earth-search#66, #71),
#: so only ``true`` changes the offset.
_BOA_OFFSET_APPLIED = ("sentinel:boa_offset_applied", "earthsearch:boa_offset_applied")


def _boa_offset_applied(props: Mapping[str, Any]) -> bool:
    return any(props.get(key) is True for key in _BOA_OFFSET_APPLIED)


def _pad_zone(code: str) -> str:
    """``6VVN`` -> ``06VVN``; ``T36UUV`` (ESA's tile id, as CDSE and product ids write it) ->
    ``36UUV``, so one tile never counts as two."""
    code = code.strip().upper().removeprefix("MGRS-")
    if re.fullmatch(r"T\d{1,2}[A-Z]{3}", code):
        code = code[1:]
    return f"0{code}" if len(code) == 4 else code


def _restore_epsg(fields: dict[str, Any]) -> None:
    code = fields.get("proj:code")
    if (
        fields.get("proj:epsg") is None
        and isinstance(code, str)
        and code.upper().startswith("EPSG:")
    ):
        fields["proj:epsg"] = int(code.split(":", 1)[1])


def _canonical_assets(assets: Mapping[str, Any]) -> dict[str, Any]:
    """Key band assets by canonical name; a key that is already canonical wins over an alias."""
    out: dict[str, Any] = {}
    # Canonical keys (B04) first, then aliases (red, B04_10m; of several resolutions of one
    # band the band's native one, else the finest), then the rest: the first holder of a name
    # keeps it, so an item carrying both B04 and red keeps its own B04.
    ordered = sorted(assets.items(), key=lambda kv: _asset_rank(kv[0]))
    for key, asset in ordered:
        name = canonical_band(key) or key
        if name not in out:
            out[name] = asset
    return out


def _asset_rank(key: str) -> tuple[int, int, int]:
    band = canonical_band(key)
    if band is None:
        return (2, 0, 0)
    if band == key:
        return (0, 0, 0)
    native = RESOLUTION_M.get(band, 0)
    res = asset_resolution(key) or native
    return (1, abs(res - native), res)


def _resolve_hrefs(item: dict[str, Any], base: str | Path | None) -> dict[str, Any]:
    relative = [
        key
        for key, asset in item["assets"].items()
        if asset.get("href") and not is_absolute_href(str(asset["href"]))
    ]
    if not relative:
        return item
    if base is None:
        self_href = next(
            (link.get("href") for link in item.get("links", []) if link.get("rel") == "self"),
            None,
        )
        if self_href and "://" in self_href:
            base = self_href.rsplit("/", 1)[0]
        elif self_href and Path(self_href).is_absolute():
            base = Path(self_href).parent
    if base is None:
        raise CatalogError(
            f"Item {item.get('id')!r} has relative asset hrefs ({', '.join(relative)}) and no "
            "absolute self link; pass base= or serve it through arctic_rts.catalog, which "
            "makes hrefs absolute."
        )
    return absolute_hrefs(item, base)


def _processing_baseline(item: Mapping[str, Any]) -> tuple[int, int]:
    """The processing baseline as (major, minor), from the property or the product id."""
    props = item.get("properties", {})
    value = props.get("s2:processing_baseline") or props.get("sentinel:processing_baseline")
    if value is not None:
        major, _, minor = str(value).partition(".")
        try:
            return (int(major), int(minor or 0))
        except ValueError:
            pass
    for text in (
        props.get("s2:product_uri"),
        props.get("sentinel:product_id"),
        item.get("id"),
    ):
        match = _BASELINE_IN_ID.search(str(text or ""))
        if match:
            return (int(match.group(1)), int(match.group(2)))
    raise CatalogError(
        f"Item {item.get('id')!r} has no raster:bands scale/offset and no processing baseline "
        "(s2:processing_baseline or _Nxxyy_ in the product id), so its reflectance offset is "
        "unknown; add raster:bands to the item."
    )


def _has_next(page: Mapping[str, Any]) -> bool:
    return any(link.get("rel") == "next" for link in page.get("links") or [])


def _open_client(url: str, network: NetworkConfig | None = None) -> Any:
    """Open a pystac-client Client, mapping every failure to one CatalogError line.

    Its requests have timeouts and bounded retries (:class:`arctic_rts.net.RetryingStacIO`).
    """
    from arctic_rts.net import RetryingStacIO, timeouts

    network = network or NetworkConfig()
    try:
        client = Client.open(url, stac_io=RetryingStacIO(network), timeout=timeouts(network))
    except _API_ERRORS as exc:
        raise CatalogError(f"Cannot open the STAC API at {url}: {_one_line(exc)}") from exc
    if client.id == RUSTAC_SERVER_ID:
        # rustac serve handles CQL2 filters but does not list the conformance class, so
        # pystac-client would warn DoesNotConformTo on every search.
        client.add_conforms_to("FILTER")
    return client


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
