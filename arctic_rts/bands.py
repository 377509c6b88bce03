"""Canonical Sentinel-2 band names and the one alias table for providers' asset keys.

Canonical names are the ESA band names with two digits (``B04``, ``B8A``) plus ``SCL``.
Earth Search v1 names assets by colour (``red``), Planetary Computer by band (``B04``),
Earth Search v0 by band too; every other module speaks canonical names only.
"""

from __future__ import annotations

#: The 12 Sentinel-2 L2A reflectance bands, in the toolkit's default order.
L2A_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
)  # fmt: skip

#: Native ground resolution in metres of each band.
RESOLUTION_M: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20, "SCL": 20,
}  # fmt: skip

#: Provider asset key -> canonical name (keys compared lower-case).
ASSET_ALIASES: dict[str, str] = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
    "scl": "SCL",
    **{b.lower(): b for b in (*L2A_BANDS, "B10", "SCL")},
    "b8a": "B8A",
}

#: Scene classification (SCL) classes that are not clear ground: nodata, saturated/defective,
#: cloud shadow, unclassified, cloud medium/high probability, thin cirrus, snow/ice.
SCL_MASKED: tuple[int, ...] = (0, 1, 3, 7, 8, 9, 10, 11)


def canonical_band(key: str) -> str | None:
    """Return the canonical band name for a provider's asset key, or None if it is no band."""
    return ASSET_ALIASES.get(key.lower())


#: Imagery domains a model can be trained on: what its input pixels are. A model is only
#: trusted on its own domain; the map run refuses a generated-demo model on real catalogs.
DOMAINS: dict[str, dict[str, str]] = {
    "sentinel-2-l2a": {
        "product": "Sentinel-2 Level-2A (bottom-of-atmosphere reflectance)",
        "reflectance": "digital numbers / 10000 with the processing-baseline offset "
        "(-0.1 from baseline 04.00, 2022-01-25) removed",
    },
    "generated-demo": {
        "product": "synthetic Sentinel-2 L2A-like scenes of arctic_rts.demo (never real imagery)",
        "reflectance": "as sentinel-2-l2a",
    },
}


def domain_card(name: str, bands: tuple[str, ...] | list[str]) -> dict[str, object]:
    """The weights card's ``domain`` entry: the domain's name, product, reflectance and bands.

    Raises:
        ValueError: an unknown domain name.
    """
    if name not in DOMAINS:
        raise ValueError(f"unknown imagery domain {name!r}; choose one of {', '.join(DOMAINS)}.")
    return {"name": name, **DOMAINS[name], "bands": list(bands)}
