"""Canonical Sentinel-2 band names and the one alias table for providers' asset keys.

Canonical names are the ESA band names with two digits (``B04``, ``B8A``) plus ``SCL``.
Earth Search v1 names assets by colour (``red``), Planetary Computer by band (``B04``),
Earth Search v0 by band too; every other module speaks canonical names only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from arctic_rts.errors import ConfigError

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
#: The SCL class of water (``map --water-mask``).
SCL_WATER = 6


#: A resolution suffix on an asset key (CDSE and others: ``B04_10m``, ``SCL_20m``).
_RESOLUTION_SUFFIX = re.compile(r"(.+?)_(\d+)m", re.IGNORECASE)


def canonical_band(key: str) -> str | None:
    """Return the canonical band name for a provider's asset key, or None if it is no band.

    Keys may carry a resolution suffix (``B04_10m`` -> ``B04``); see :func:`asset_resolution`.
    """
    found = ASSET_ALIASES.get(key.lower())
    if found:
        return found
    m = _RESOLUTION_SUFFIX.fullmatch(key)
    return ASSET_ALIASES.get(m.group(1).lower()) if m else None


def asset_resolution(key: str) -> int | None:
    """The resolution in metres an asset key names (``B04_20m`` -> 20), or None."""
    m = _RESOLUTION_SUFFIX.fullmatch(key)
    return int(m.group(2)) if m else None


def canonical_band_name(name: str) -> str | None:
    """Like :func:`canonical_band`, and also ``B4``/``b4`` -> ``B04`` (GeoTIFF descriptions)."""
    found = canonical_band(name)
    if found:
        return found
    m = re.fullmatch(r"[Bb](\d)", name.strip())
    return f"B0{m.group(1)}" if m else None


def validate_bands(bands: Sequence[str]) -> tuple[str, ...]:
    """Check a model's input bands: canonical names, at least one, each once, no SCL.

    The one rule for band lists that users give (``load_scenes``, a training run's
    ``data.bands``, ``build_dataset``); whether imagery matches a weights card is checked by
    :mod:`arctic_rts.model.weights`.

    Returns:
        The bands as a tuple of ``str``, in the given order.

    Raises:
        ConfigError: Empty, a repeated band, SCL, or a name that is not canonical.
    """
    band_list = tuple(str(b) for b in bands)
    if not band_list:
        raise ConfigError("bands is empty: give the model card's band names, e.g. ['B04', 'B08'].")
    for band in band_list:
        if band == "SCL":
            raise ConfigError(
                "SCL is the cloud mask, not an input band; remove it from bands (the mask is "
                "set with LoadConfig.masked_scl_classes)."
            )
        if canonical_band(band) != band:
            raise ConfigError(
                f"Band {band!r} is not a canonical Sentinel-2 band name; use names such as "
                "B02, B04, B8A, B11 (see arctic_rts.bands)."
            )
    repeated = sorted({b for b in band_list if band_list.count(b) > 1})
    if repeated:
        raise ConfigError(f"bands lists {', '.join(repeated)} more than once; list each once.")
    return band_list


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
