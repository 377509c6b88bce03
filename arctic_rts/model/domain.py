"""Which model for which imagery: the bundled models, their domains, and the guard between them.

A model is trusted only on the imagery domain it was trained on (the card's ``domain``). The
bundled demo model has only ever seen generated scenes: on a real catalog it would map
something, silently and badly. So the default model is the real-imagery one everywhere but on
the embedded demo catalog, and a generated-demo model is refused on any scene that is not a
generated one (demo items carry the generator's mark in ``processing:software``) unless the
caller insists (tests do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from arctic_rts.config import DEMO_CATALOG, DEMO_SOFTWARE
from arctic_rts.errors import WeightsError

#: Domain name of models trained on generated demo scenes.
DEMO_DOMAIN = "generated-demo"

_DATA = Path(__file__).resolve().parents[1] / "data"


def demo_weights() -> Path:
    """The bundled demo model (generated scenes only; the default on the demo catalog)."""
    return _DATA / "demo_unet.safetensors"


def real_weights() -> Path:
    """The bundled real-imagery model (Sentinel-2 L2A; the default on every other catalog)."""
    return _DATA / "real_unet.safetensors"


def is_demo_item(item: Mapping[str, Any]) -> bool:
    """Whether a STAC item was made by the demo generator."""
    software = item.get("properties", {}).get("processing:software")
    return isinstance(software, Mapping) and DEMO_SOFTWARE in software


def default_weights(stac: str | Path | None) -> Path:
    """The bundled model for a catalog: the demo model on the embedded demo catalog (``"demo"``),
    the real-imagery model on every other one."""
    return demo_weights() if str(stac) == DEMO_CATALOG else real_weights()


def model_domain(card: Mapping[str, Any]) -> str | None:
    """The card's domain name (None for cards written before domains were recorded)."""
    domain = card.get("domain")
    if isinstance(domain, Mapping):
        name = domain.get("name")
        return str(name) if name is not None else None
    return str(domain) if domain is not None else None


def check_domain(
    domain: str | None,
    name: str,
    items: Iterable[Mapping[str, Any]],
    *,
    allow_demo_model: bool = False,
) -> None:
    """Refuse a generated-demo model on scenes that are not generated demo scenes.

    Args:
        domain: The model's domain (``Weights.domain``: "generated-demo" when any ensemble
            member is a demo model).
        name: The model's name, for the message.
        items: The selected scenes.
        allow_demo_model: Map anyway (tests).

    Raises:
        WeightsError: one line naming the real model to use instead.
    """
    if allow_demo_model or domain != DEMO_DOMAIN:
        return
    real = [i for i in items if not is_demo_item(i)]
    if real:
        raise WeightsError(
            f"the model '{name or '?'}' was trained on generated demo scenes only and "
            f"{len(real)} selected scene(s) are real imagery (e.g. {real[0].get('id', '?')}); "
            f"leave --weights out to use the bundled real-imagery model ({real_weights().name}) "
            "or pass weights trained on Sentinel-2 L2A (--allow-demo-model overrides)."
        )
