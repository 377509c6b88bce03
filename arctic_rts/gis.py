"""What GIS users open: the inventory's QGIS styles and a quick-look picture of it.

:func:`write_styles` stores a default QML style for every year layer (``rts_<year>``) and change
layer (``changes_<y1>_<y2>``) of an inventory GeoPackage in its ``layer_styles`` table, the
table QGIS reads when it opens a layer (columns ``f_table_catalog``, ``f_table_schema``,
``f_table_name``, ``f_geometry_column``, ``styleName``, ``styleQML``, ``styleSLD``,
``useAsDefault``, ``description``, ``owner``, ``ui``, ``update_time``). The styles make the
layers time-aware: QGIS's temporal controller reads the DATE fields the writer stores
(``date_first``/``date_last``, ``date_prev``/``date_curr``). The inventory writer calls it on its
temporary copy, inside the same atomic write as the layers.

:func:`write_quicklook` draws every year of an inventory into a PNG beside it (matplotlib, Agg
backend, no display needed), written atomically.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd
import pyogrio

#: The name of the styles this module writes (other styles in the table are kept).
STYLE_NAME = "arctic-rts"
#: The table QGIS reads styles from.
STYLES_TABLE = "layer_styles"
#: Fill colour (R,G,B,alpha) of each change class; the classes of
#: :data:`arctic_rts.changes.CHANGE_CLASSES`.
CHANGE_COLOURS = {
    "new": "44,162,95,170",
    "grown": "222,45,38,170",
    "shrunk": "49,130,189,170",
    "stable": "150,150,150,120",
    "not_detected": "255,255,255,0",
}
_YEAR_LAYER = re.compile(r"rts_\d{4}")
_CHANGE_LAYER = re.compile(r"changes_\d{4}_\d{4}")


def _fill_symbol(name: str, colour: str, outline: str, dashed: bool = False) -> ET.Element:
    symbol = ET.Element(
        "symbol",
        {"type": "fill", "name": name, "alpha": "1", "clip_to_extent": "1", "force_rhr": "0"},
    )
    layer = ET.SubElement(
        symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"}
    )
    props = {
        "color": colour,
        "style": "solid",
        "outline_color": outline,
        "outline_style": "dash" if dashed else "solid",
        "outline_width": "0.4",
        "outline_width_unit": "MM",
        "joinstyle": "bevel",
    }
    for key, value in props.items():
        ET.SubElement(layer, "prop", {"k": key, "v": value})
    return symbol


def layer_qml(layer: str) -> str:
    """The QML style of an inventory layer: slumps as orange outlines over a light fill, a
    change layer by class; both with their date span as the temporal range (QGIS mode 2:
    start and end date from fields)."""
    change = _CHANGE_LAYER.fullmatch(layer) is not None
    root = ET.Element("qgis", {"version": "3.28.0", "styleCategories": "AllStyleCategories"})
    start, end = ("date_prev", "date_curr") if change else ("date_first", "date_last")
    temporal = ET.SubElement(
        root,
        "temporal",
        {"enabled": "1", "mode": "2", "startField": start, "endField": end, "accumulate": "0",
         "durationField": "", "durationUnit": "d", "fixedDuration": "0", "startExpression": "",
         "endExpression": "", "limitMode": "1"},
    )  # fmt: skip
    fixed = ET.SubElement(temporal, "fixedRange")
    ET.SubElement(fixed, "start")
    ET.SubElement(fixed, "end")
    base = {"symbollevels": "0", "forceraster": "0", "enableorderby": "0"}
    if change:
        renderer = ET.SubElement(
            root, "renderer-v2", {"type": "categorizedSymbol", "attr": "change", **base}
        )
        categories = ET.SubElement(renderer, "categories")
        symbols = ET.SubElement(renderer, "symbols")
        for i, (cls, colour) in enumerate(CHANGE_COLOURS.items()):
            ET.SubElement(
                categories,
                "category",
                {"render": "true", "symbol": str(i), "value": cls, "label": cls.replace("_", " ")},
            )
            outline = "80,80,80,255" if cls == "not_detected" else "40,40,40,255"
            symbols.append(_fill_symbol(str(i), colour, outline, dashed=cls == "not_detected"))
    else:
        renderer = ET.SubElement(root, "renderer-v2", {"type": "singleSymbol", **base})
        symbols = ET.SubElement(renderer, "symbols")
        symbols.append(_fill_symbol("0", "253,141,60,90", "217,72,1,255"))
    ET.SubElement(root, "layerGeometryType").text = "2"  # polygons
    body = ET.tostring(root, encoding="unicode")
    return f"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n{body}\n"


def write_styles(path: str | Path) -> list[str]:
    """Write (or refresh) the default style of every year and change layer of ``path``.

    Rows of other styles (a user's own, saved from QGIS) are kept; ours is the default of a
    layer unless another style already is. Call it on the file being written (the inventory
    writer calls it on its temporary copy).

    Returns:
        The layers styled.
    """
    path = Path(path)
    names = [str(n) for n, _ in pyogrio.list_layers(path)]
    styled = [n for n in names if _YEAR_LAYER.fullmatch(n) or _CHANGE_LAYER.fullmatch(n)]
    old = pd.DataFrame()
    if STYLES_TABLE in names:
        old = pyogrio.read_dataframe(path, layer=STYLES_TABLE, read_geometry=False)
        old = old[~((old["styleName"] == STYLE_NAME) & old["f_table_name"].isin(styled))]
    user_default = set() if old.empty else set(old.loc[old["useAsDefault"] == 1, "f_table_name"])
    now = pd.Timestamp.now(tz="UTC").floor("s")
    rows = [
        {
            "f_table_catalog": "",
            "f_table_schema": "",
            "f_table_name": layer,
            "f_geometry_column": pyogrio.read_info(path, layer=layer)["geometry_name"] or "geom",
            "styleName": STYLE_NAME,
            "styleQML": layer_qml(layer),
            "styleSLD": "",
            "useAsDefault": layer not in user_default,
            "description": "arctic-rts default style",
            "owner": "",
            "ui": None,
            "update_time": now,
        }
        for layer in styled
    ]
    table = pd.concat([f for f in (old, pd.DataFrame(rows)) if len(f)], ignore_index=True)
    if len(table):
        table["useAsDefault"] = table["useAsDefault"].astype(bool)
        # QGIS writes UTC times with a Z, GDAL may read them back naive: all UTC here
        table["update_time"] = pd.to_datetime(table["update_time"], utc=True)
        pyogrio.write_dataframe(
            table, path, layer=STYLES_TABLE, driver="GPKG", layer_options={"FID": "id"}
        )
    return styled


def quicklook_path(inventory: str | Path) -> Path:
    """Where :func:`write_quicklook` puts the picture of ``inventory``: ``NAME.quicklook.png``."""
    inventory = Path(inventory)
    return inventory.with_name(f"{inventory.stem}.quicklook.png")


def write_quicklook(inventory: str | Path, png: str | Path | None = None) -> Path:
    """Draw every year of an inventory GeoPackage into a PNG (default: beside it, see
    :func:`quicklook_path`): slumps coloured by year, the mapped scenes' footprints as
    outlines, in the inventory's CRS. Written atomically; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")  # no display; a no-op where Agg is already in use
    import matplotlib.pyplot as plt

    from arctic_rts.files import atomic_write
    from arctic_rts.inventory import inventory_years, read_inventory

    inventory = Path(inventory)
    png = Path(png) if png is not None else quicklook_path(inventory)
    slumps = read_inventory(inventory)
    years = inventory_years(inventory)
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    try:
        if "scenes" in [str(n) for n, _ in pyogrio.list_layers(inventory)]:
            scenes = pyogrio.read_dataframe(inventory, layer="scenes")
            if len(scenes):
                scenes.to_crs(slumps.crs).boundary.plot(ax=ax, color="0.6", linewidth=0.8)
        cmap = plt.get_cmap("viridis", max(len(years), 1))
        for i, year in enumerate(years):
            part = slumps[slumps["year"] == year]
            if len(part):
                # see-through fills with solid edges: a slump of every year stays visible
                colour = cmap(i)
                part.plot(ax=ax, facecolor=(*colour[:3], 0.35), edgecolor=colour, linewidth=1.0)
                ax.plot([], [], color=colour, linewidth=6, label=str(year))  # legend entry
        if len(slumps):
            ax.legend(title="year", loc="best")
        ax.set_title(f"{inventory.name}: {len(slumps)} slumps, years {_years_text(years)}")
        ax.set_xlabel(f"x (m, {slumps.crs.to_string() if slumps.crs else 'no CRS'})")
        ax.set_ylabel("y (m)")
        ax.set_aspect("equal")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(axis="x", labelrotation=30)
        fig.tight_layout()
        atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    finally:
        plt.close(fig)
    return png


def _years_text(years: list[Any]) -> str:
    if not years:
        return "none"
    return str(years[0]) if len(years) == 1 else f"{years[0]}-{years[-1]}"
