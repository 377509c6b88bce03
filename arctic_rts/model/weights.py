"""Weights files: safetensors plus a JSON card, the one place models are saved and loaded.

A weights file is ``name.safetensors`` (tensors, with the card JSON in its metadata under
``"card"``) and ``name.json`` beside it (the same card, for people and for QGIS-side tooling).
Only safetensors are accepted: a pickle (``.pt``/``.pth``/``.ckpt``) can run arbitrary code on
load. The card records the sha256 of the tensors, which loading checks.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from arctic_rts.errors import WeightsError
from arctic_rts.model.unet import UNet, build_unet

#: Card keys every weights file carries (DESIGN.md, "The weights card").
CARD_KEYS: tuple[str, ...] = (
    "name",
    "version",
    "architecture",
    "bands",
    "normalisation",
    "patch_size",
    "threshold",
    "training",
    "metrics",
    "sha256",
    "created",
)

_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def bundled_weights() -> Path:
    """Path of the demo weights shipped inside the package (produced by ``arctic-rts train``)."""
    return Path(__file__).resolve().parents[1] / "data" / "demo_unet.safetensors"


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order.

    Independent of the file's layout and metadata, so rewriting the card keeps the hash.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """JSON fallback for numpy/torch scalars and arrays and paths in a card."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path} looks like a pickled PyTorch file; arctic-rts loads only safetensors "
            "(pickles can run code on load). Convert it with arctic_rts.model.save_weights "
            "after loading it yourself with torch.load(..., weights_only=True)."
        )
    if path.suffix.lower() != ".safetensors":
        raise WeightsError(f"{path}: weights must be a .safetensors file with its JSON card.")


def _validate_card(card: Mapping[str, Any], in_channels: int | None = None) -> None:
    bands = card.get("bands")
    if not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands):
        raise WeightsError("the card needs 'bands': a list of canonical band names like 'B04'.")
    norm = card.get("normalisation")
    if (
        not isinstance(norm, Mapping)
        or len(norm.get("mean", ())) != len(bands)
        or len(norm.get("std", ())) != len(bands)
    ):
        raise WeightsError(
            "the card needs 'normalisation': {'mean': [...], 'std': [...]} with one value per band."
        )
    if any(not (float(s) > 0 and math.isfinite(float(s))) for s in norm["std"]):
        raise WeightsError(f"normalisation std must be positive and finite, got {norm['std']}.")
    if in_channels is not None and in_channels != len(bands):
        raise WeightsError(
            f"the model takes {in_channels} input channels but the card lists {len(bands)} bands."
        )


def save_weights(model: UNet, card: Mapping[str, Any], path: str | os.PathLike[str]) -> dict:
    """Write ``model``'s tensors and its card to ``path`` (.safetensors) and ``path``.json.

    Args:
        model: The trained network.
        card: At least ``bands`` and ``normalisation``; ``architecture``, ``sha256`` and
            ``created`` are filled in, other missing keys get neutral defaults.
        path: Target ``.safetensors`` path; written atomically (temporary file, then rename).

    Returns:
        The card as written.
    """
    path = Path(path)
    _check_suffix(path)
    _validate_card(card, model.in_channels)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    full: dict[str, Any] = {
        "name": path.stem,
        "version": "0.1.0",
        "patch_size": None,
        "threshold": 0.5,
        "training": {},
        "metrics": {},
        **dict(card),
        "architecture": model.architecture(),
        "sha256": tensors_sha256(tensors),
        "created": card.get("created") or datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(full, indent=2, default=_jsonable)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, write in (
        (path, lambda p: save_file(tensors, str(p), metadata={"card": text})),
        (path.with_suffix(".json"), lambda p: Path(p).write_text(text + "\n")),
    ):
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return full


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the card of a weights file (from the safetensors metadata, else the JSON beside it)."""
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file: {err}.") from err
    text = meta.get("card")
    if text is None:
        side = path.with_suffix(".json")
        if not side.is_file():
            raise WeightsError(f"{path} carries no card and {side} is missing.")
        text = side.read_text()
    try:
        card = json.loads(text)
    except json.JSONDecodeError as err:
        raise WeightsError(f"the card of {path} is not valid JSON: {err}.") from err
    _validate_card(card)
    return dict(card)


def check_bands(card: Mapping[str, Any], bands: Sequence[str]) -> None:
    """Refuse imagery bands that differ from the card's (by set or by order)."""
    expected = list(card["bands"])
    got = list(bands)
    if got == expected:
        return
    missing = [b for b in expected if b not in got]
    extra = [b for b in got if b not in expected]
    if missing or extra:
        raise WeightsError(
            f"the imagery's bands do not match the model '{card.get('name')}': missing "
            f"{missing or 'none'}, extra {extra or 'none'}. Load the scenes with exactly the "
            f"card's bands {expected}."
        )
    raise WeightsError(
        f"the imagery's bands {got} are in a different order than the model's {expected}; "
        "load them in the card's order."
    )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; anything else as torch understands it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise WeightsError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WeightsError(f"device {device!r} asked for but no CUDA GPU is visible; use 'cpu'.")
    return dev


class NormalizedModel(nn.Module):
    """A UNet behind its card's normalisation: raw reflectance in, segmentation logits out.

    NaN input pixels are replaced by the band mean (0 after normalisation), so invalid pixels
    do not poison their neighbours; callers mask the output where the input was invalid.
    """

    def __init__(self, unet: UNet, card: Mapping[str, Any]) -> None:
        super().__init__()
        self.unet = unet
        self.card = dict(card)
        self.bands: tuple[str, ...] = tuple(card["bands"])
        norm = card["normalisation"]
        shape = (1, len(self.bands), 1, 1)
        mean = torch.tensor([float(v) for v in norm["mean"]], dtype=torch.float32).reshape(shape)
        std = torch.tensor([float(v) for v in norm["std"]], dtype=torch.float32).reshape(shape)
        self.mean: torch.Tensor
        self.inv_std: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1.0 / std)
        self.register_buffer("shift", -mean / std, persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Raw reflectance -> the network's input, NaN -> 0 (the band mean), in ``x``'s memory
        layout. One pass and one new tensor: at 12 bands per pixel the input is larger than
        most activations of a small UNet, so every extra pass over it costs throughput."""
        z = torch.addcmul(self.shift, x, self.inv_std)
        return z.nan_to_num_(nan=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 1, H, W)`` for raw reflectance ``(N, C, H, W)`` in card band order."""
        return self.unet(self.normalise(x))


def load_model(
    path: str | os.PathLike[str],
    *,
    bands: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[NormalizedModel, dict[str, Any]]:
    """Load a weights file into an evaluation-mode model taking raw reflectance.

    Args:
        path: A ``.safetensors`` weights file written by :func:`save_weights`.
        bands: The imagery's band names in order; a mismatch with the card raises.
        device: ``"cpu"``, ``"cuda[:N]"`` or ``"auto"``.

    Returns:
        ``(model, card)``: the model (eval mode, on ``device``) and the card.

    Raises:
        WeightsError: not safetensors, unreadable, tensors not matching the card's sha256 or
            architecture, or bands not matching the card.
    """
    path = Path(path)
    card = read_card(path)
    if bands is not None:
        check_bands(card, bands)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file: {err}.") from err
    digest = tensors_sha256(tensors)
    if card.get("sha256") and digest != card["sha256"]:
        raise WeightsError(
            f"{path}: tensors hash to {digest[:12]} but the card records "
            f"{str(card['sha256'])[:12]}; the file is corrupt or was changed after saving."
        )
    try:
        unet = build_unet(card["architecture"])
        unet.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise WeightsError(f"{path}: tensors do not fit the card's architecture: {err}.") from err
    model = NormalizedModel(unet, card).to(resolve_device(device)).eval()
    model.requires_grad_(False)
    return model, card


@dataclass(frozen=True)
class ModelRef:
    """A small, picklable reference to a weights file: what tasks carry instead of a network.

    Workers resolve it once per process with :func:`arctic_rts.cluster.get_model`, which
    checks the tensors against ``sha256``.
    """

    #: Absolute path of the ``.safetensors`` file, readable by every worker.
    path: str
    #: sha256 of the tensors, as recorded in the card.
    sha256: str

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> ModelRef:
        """Reference a weights file by its absolute path and its card's tensor hash."""
        p = Path(path).expanduser().resolve()
        card = read_card(p)
        if not card.get("sha256"):
            raise WeightsError(f"the card of {p} records no sha256; re-save it with save_weights.")
        return cls(str(p), str(card["sha256"]))
