"""Weights files: safetensors plus a JSON card, the one place models are saved and loaded.

A weights file is ``name.safetensors`` (tensors, with the card JSON in its metadata under
``"card"``) and ``name.json`` beside it (the same card, for people and for QGIS-side tooling).
Only safetensors are accepted: a pickle (``.pt``/``.pth``/``.ckpt``) can run arbitrary code on
load. The card records the sha256 of the tensors, which loading checks.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from arctic_rts.errors import ConfigError, WeightsError
from arctic_rts.files import atomic_write
from arctic_rts.model.domain import DEMO_DOMAIN, demo_weights, model_domain
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
    """Path of the demo weights shipped inside the package (generated scenes only).

    The same file as :func:`arctic_rts.model.domain.demo_weights`; which bundled model a map
    run takes by default is :func:`arctic_rts.model.domain.default_weights`' choice.
    """
    return demo_weights()


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
    try:  # a hand-edited card may hold anything: numbers as text, a number for a list
        ok = isinstance(norm, Mapping) and all(
            len(norm.get(k, ())) == len(bands) and [float(v) for v in norm[k]]
            for k in ("mean", "std")
        )
    except (TypeError, ValueError):
        ok = False
    if not ok or not isinstance(norm, Mapping):
        raise WeightsError(
            "the card needs 'normalisation': {'mean': [...], 'std': [...]} with one number per "
            "band."
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
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"card": text}))
    atomic_write(path.with_suffix(".json"), lambda p: p.write_text(text + "\n"))
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
    if not isinstance(card, dict):
        raise WeightsError(f"the card of {path} must be a JSON object, got {type(card).__name__}.")
    _validate_card(card)
    return dict(card)


def check_bands(
    model: Weights | Mapping[str, Any], *scenes: Collection[str], exact: bool = True
) -> None:
    """Refuse imagery the model cannot take, with an error that names the fix.

    The one band check of the toolkit, for loaded arrays and for STAC items alike. Nothing is
    refused when ``scenes`` is empty; otherwise the check passes when at least one scene fits,
    so that a band missing from only some scenes stays a per-scene failure.

    Args:
        model: The weights, or a card, whose ``bands`` the imagery must feed.
        *scenes: Each scene's band names. With ``exact`` (a loaded array's ``band``
            coordinate) they must equal the card's, by set and by order; without (a STAC
            item's asset keys) they must include the card's, in any order, among others.
        exact: Whether each scene's bands are the model's input as is.

    Raises:
        WeightsError: No scene fits. Without ``exact`` this stops a model for other imagery
            (an L1C model's ``B10`` on L2A scenes) or a card with provider names (``red``)
            before any cluster work, instead of failing every scene one by one.
    """
    if isinstance(model, Weights):
        expected, name = list(model.bands), model.name
    else:
        expected, name = [str(b) for b in model["bands"]], str(model.get("name"))
    if not scenes or any(list(s) == expected if exact else set(expected) <= set(s) for s in scenes):
        return
    missing = [b for b in expected if any(b not in s for s in scenes)]
    if not exact:
        raise WeightsError(
            f"the model '{name}' needs bands {missing} that none of the "
            f"{len(scenes)} selected scenes carries; use weights whose card lists canonical "
            "bands of this collection (Sentinel-2 L2A: B01-B09, B8A, B11, B12)."
        )
    got = list(scenes[0]) if len(scenes) == 1 else sorted({b for s in scenes for b in s})
    extra = [b for b in got if b not in expected]
    if missing or extra:
        raise WeightsError(
            f"the imagery's bands do not match the model '{name}': missing "
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

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw reflectance -> the network's input, NaN -> 0 (the band mean), in ``x``'s memory
        layout. One pass and one new tensor: at 12 bands per pixel the input is larger than
        most activations of a small UNet, so every extra pass over it costs throughput."""
        z = torch.addcmul(self.shift, x, self.inv_std)
        return z.nan_to_num_(nan=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 1, H, W)`` for raw reflectance ``(N, C, H, W)`` in card band order."""
        return self.unet(self.normalize(x))


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
        return cls._from_card(p, read_card(p))

    @classmethod
    def _from_card(cls, path: Path, card: Mapping[str, Any]) -> ModelRef:
        """The reference of the weights file at the absolute ``path`` with card ``card``."""
        if not card.get("sha256"):
            raise WeightsError(
                f"the card of {path} records no sha256; re-save it with save_weights."
            )
        return cls(str(path), str(card["sha256"]))


@dataclass(frozen=True)
class Weights:
    """One model identity: what a run maps with, resolved once in the client.

    Built by :func:`resolve_weights` (or :meth:`from_references`), which reads each card once;
    everything downstream (``map_region``, ``predict``, the inventory runner) takes its facts
    from here instead of reading the card again. Only :attr:`references` travel to the
    workers, where :func:`arctic_rts.cluster.get_model` loads each file once per process.
    An ensemble's members must take the same bands in the same order; its other facts are
    those of the first member, except :attr:`halo`.
    """

    #: The weights files, one per ensemble member (probabilities are averaged).
    references: tuple[ModelRef, ...]
    #: The card's ``name`` ("" when it names none).
    name: str
    #: Canonical band names the model takes, in input order.
    bands: tuple[str, ...]
    #: Default probability threshold for vectorising (0.5, as ``save_weights`` writes it,
    #: when the card names none).
    threshold: float
    #: The largest halo the members' cards name (:func:`arctic_rts.model.halo.measure_halo`);
    #: None when any member names none, which makes ``predict`` take its exact halo.
    halo: int | None
    #: Side of the training patches in pixels, when the card names it.
    patch_size: int | None
    #: The imagery domain the model is meant for (:data:`arctic_rts.bands.DOMAINS`), when the
    #: cards name one; "generated-demo" when any ensemble member is a demo model.
    domain: str | None
    #: The training method (``training.method`` of the card), when the card names it.
    method: str | None
    #: Minimum object area (m2) the card chose by cross-validation, when it names one.
    min_area_m2: float | None
    #: Opening radius (px) and hysteresis lower cut the card chose (0: off; None: not named).
    opening_px: int | None
    hysteresis_low: float | None
    #: The first member's card as read from disk, read-only: the record of provenance.
    card: Mapping[str, Any] = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.references:
            raise ConfigError("no weights given.")
        if not isinstance(self.card, MappingProxyType):
            # A copy, so that the caller's dict changing later cannot change the identity.
            object.__setattr__(self, "card", MappingProxyType(copy.deepcopy(dict(self.card))))

    def __getstate__(self) -> dict[str, Any]:
        # A mappingproxy does not pickle: the card travels as a plain dict.
        return {**self.__dict__, "card": dict(self.card)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "card", MappingProxyType(state["card"]))

    @property
    def postprocessing(self) -> tuple[float, float | None, int | None, float | None]:
        """Threshold, minimum area, opening and hysteresis as the card names them
        (the arguments of :meth:`arctic_rts.config.VectorizeConfig.for_model`)."""
        return self.threshold, self.min_area_m2, self.opening_px, self.hysteresis_low

    @property
    def sha256(self) -> tuple[str, ...]:
        """The tensors' hashes, one per member, as the cards record them."""
        return tuple(r.sha256 for r in self.references)

    @classmethod
    def from_references(cls, references: Sequence[ModelRef]) -> Weights:
        """The identity of existing references (reads each member's card once)."""
        return cls._from_cards(list(references), [read_card(r.path) for r in references])

    @classmethod
    def _from_cards(cls, refs: list[ModelRef], cards: Sequence[Mapping[str, Any]]) -> Weights:
        """The identity of ``refs`` whose cards, in the same order, are ``cards``."""
        if not refs:
            raise ConfigError("no weights given.")
        first = list(cards[0]["bands"])
        for ref, card in zip(refs[1:], cards[1:], strict=True):
            # Ensemble members read one loaded array; otherwise every scene would fail.
            if list(card["bands"]) != first:
                raise WeightsError(
                    f"ensemble members must take the same bands in the same order: "
                    f"{refs[0].path} takes {first}, {ref.path} takes {list(card['bands'])}."
                )
        halos = [card.get("halo") for card in cards]
        named = [int(h) for h in halos if h is not None]
        card = cards[0]
        threshold, patch, area = (
            card.get("threshold"),
            card.get("patch_size"),
            card.get("min_area_m2"),
        )
        domains = [model_domain(c) for c in cards]
        domain = DEMO_DOMAIN if DEMO_DOMAIN in domains else domains[0]
        method = (card.get("training") or {}).get("method")
        opening, low = card.get("opening_px"), card.get("hysteresis_low")
        return cls(
            references=tuple(refs),
            name=str(card.get("name") or ""),
            bands=tuple(str(b) for b in first),
            threshold=0.5 if threshold is None else float(threshold),
            halo=max(named) if len(named) == len(halos) else None,
            patch_size=None if patch is None else int(patch),
            domain=domain,
            min_area_m2=None if area is None else float(area),
            opening_px=None if opening is None else int(opening),
            hysteresis_low=None if low is None else float(low),
            method=None if method is None else str(method),
            card=card,
        )


def resolve_weights(
    weights: Weights | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
) -> Weights:
    """The one model identity of a run, from the user's weights argument.

    Each card is read once, here; pass the result on instead of paths.

    Args:
        weights: A ``.safetensors`` file, several (an ensemble: mean probability), None for
            the bundled demo model, or a :class:`Weights` (returned as is).

    Raises:
        ConfigError: An empty list.
        WeightsError: A file is missing, not safetensors, without a card or a tensor hash, or
            ensemble members that take different bands.
    """
    if isinstance(weights, Weights):
        return weights
    if weights is None:
        paths = [bundled_weights()]
    elif isinstance(weights, (str, os.PathLike)):
        paths = [Path(weights)]
    else:
        paths = [Path(w) for w in weights]
    if not paths:
        raise ConfigError("no weights given.")
    paths = [p.expanduser().resolve() for p in paths]
    cards = [read_card(p) for p in paths]
    refs = [ModelRef._from_card(p, card) for p, card in zip(paths, cards, strict=True)]
    return Weights._from_cards(refs, cards)
