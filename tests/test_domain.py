"""Model domains: the bundled model is chosen from the scenes, a demo model refused on real ones."""

from __future__ import annotations

from typing import Any

import pytest

from arctic_rts.errors import WeightsError
from arctic_rts.model.domain import (
    check_domain,
    default_weights,
    demo_weights,
    is_demo_item,
    model_domain,
    real_weights,
)
from arctic_rts.model.weights import read_card


def _item(demo: bool) -> dict[str, Any]:
    props: dict[str, Any] = {"datetime": "2021-07-01T00:00:00Z"}
    if demo:
        props["processing:software"] = {"arctic-rts-demo": "9"}
    return {"id": "demo-item" if demo else "S2B_8WMC_20210701_0_L2A", "properties": props}


def test_demo_items_are_recognised_by_the_generator_mark() -> None:
    assert is_demo_item(_item(True))
    assert not is_demo_item(_item(False))
    assert not is_demo_item({"properties": {"processing:software": "sen2cor"}})


def test_the_default_model_follows_the_catalog() -> None:
    assert default_weights("demo") == demo_weights()
    for stac in (None, "https://earth-search.aws.element84.com/v1", "/data/items", "demo.parquet"):
        assert default_weights(stac) == real_weights()


def test_the_bundled_demo_model_is_refused_on_real_scenes() -> None:
    card = read_card(demo_weights())
    demo = model_domain(card)
    assert demo == "generated-demo"
    check_domain(demo, card["name"], [_item(True)])  # its own domain
    with pytest.raises(WeightsError, match=r"generated demo scenes only.*real_unet") as err:
        check_domain(demo, card["name"], [_item(True), _item(False)])
    assert "\n" not in str(err.value)
    check_domain(demo, card["name"], [_item(False)], allow_demo_model=True)


def test_a_real_model_is_accepted_everywhere() -> None:
    check_domain("sentinel-2-l2a", "real", [_item(False), _item(True)])
    check_domain(None, "old card without a domain", [_item(False)])
    assert model_domain({"domain": {"name": "sentinel-2-l2a"}}) == "sentinel-2-l2a"
    assert model_domain({"name": "old"}) is None
