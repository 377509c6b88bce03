"""Shared fixtures: the real data folder, found in one place; test weights; a copy of a
module's demo catalog."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from arctic_rts.bands import L2A_BANDS
from arctic_rts.demo import DemoCatalog
from arctic_rts.model import UNet, save_weights

#: ../shared/data beside the repository (override with ARCTIC_RTS_SHARED_DATA).
SHARED_DATA = Path(
    os.environ.get(
        "ARCTIC_RTS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder ``../shared/data``; tests that need it skip when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set ARCTIC_RTS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def rkh_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog folder of the real 29RKH item with its hrefs on the real (10x decimated) COGs."""
    cogs = shared_data / "s2_l2a_cogs_29RKH"
    item = json.loads((cogs / "S2A_29RKH_20200219_0_L2A.json").read_text())
    for asset in item["assets"].values():
        local = cogs / asset["href"].rsplit("/", 1)[-1]
        if local.is_file():
            asset["href"] = str(local)
    folder = tmp_path_factory.mktemp("rkh")
    (folder / "item.json").write_text(json.dumps(item))
    return folder


#: NDVI below this is "bare soil" for the stand-in model: 1.3 * B04 - 0.7 * B08 > 0.
NDVI_MAX = 0.3


def _ndvi_unet(bands: list[str]) -> UNet:
    """A smallest UNet whose logit is +-8 by the sign of ``(1+t) * B04 - (1-t) * B08``.

    Only centre taps are set and every deeper stage is zero, so the network is a per-pixel rule
    passed through the real encoder/decoder: the first conv computes the score into channel 0
    and its negative into channel 1; the per-pixel channel LayerNorm of two channels ``(s, -s)``
    is ``sign(s)``; later convs carry that sign along the first skip connection to the head.
    """
    torch.manual_seed(0)
    net = UNet(len(bands), widths=(2, 2), bottleneck=2)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                assert module.bias is not None
                module.bias.zero_()
        score = torch.zeros(len(bands))
        score[bands.index("B04")] = 1.0 + NDVI_MAX
        score[bands.index("B08")] = -(1.0 - NDVI_MAX)
        sign_pair = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
        first = net.down[0][0][0]
        first.weight[0, :, 1, 1] = score
        first.weight[1, :, 1, 1] = -score
        net.down[0][1][0].weight[:, :, 1, 1] = sign_pair
        # The last decoder stage sees cat([upsampled deep path (zero), first skip]).
        net.up[-1].body[0][0].weight[:, 2:4, 1, 1] = sign_pair
        net.up[-1].body[1][0].weight[:, :, 1, 1] = sign_pair
        net.head.weight[0, :, 0, 0] = torch.tensor([8.0, -8.0])
    return net


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-set NDVI-rule UNet as a real safetensors file (test_cli.py has its own)."""
    bands = list(L2A_BANDS)
    path = tmp_path_factory.mktemp("weights") / "ndvi_rule.safetensors"
    card = {
        "bands": bands,
        # Identity normalisation: the first conv sees raw reflectance.
        "normalisation": {"mean": [0.0] * len(bands), "std": [1.0] * len(bands)},
        "threshold": 0.5,
        "training": {"method": "hand-set NDVI rule for tests"},
    }
    save_weights(_ndvi_unet(bands), card, path)
    return path


@pytest.fixture
def catalog_copy(demo: DemoCatalog, tmp_path: Path) -> Path:
    """A copy of the module's ``demo`` catalog (its own ``demo`` fixture) in ``tmp_path /
    "catalog"``, for tests that break, add or move its files."""
    copy = tmp_path / "catalog"
    shutil.copytree(demo.root, copy)
    return copy
