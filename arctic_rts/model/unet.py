"""The paper's UNet (Heidler et al. 2024): four stages, per-pixel channel LayerNorm, optional heads.

The normalisation is a LayerNorm over channels *per pixel*, never GroupNorm(1, C): GroupNorm
normalizes over the whole tile, so its output depends on how a scene is cut into tiles. With the
per-pixel norm the network is translation-equivariant on a 16 px grid, and tiled inference with a
halo of >= 128 px equals whole-scene inference (see DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

#: Encoder widths of the paper's UNet.
WIDTHS: tuple[int, ...] = (16, 32, 64, 128)
#: Bottleneck width of the paper's UNet.
BOTTLENECK: int = 256
#: Pseudo-classes of the PixelDINO head in the paper.
DINO_CLASSES: int = 24


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an ``(N, C, H, W)`` tensor, independently per pixel.

    Implemented as ``F.layer_norm`` on an NHWC view: for a ``channels_last`` tensor that view is
    contiguous, so the fused kernel runs without copies; a hand-written mean/variance over dim 1
    costs about 30 % of the network's throughput.

    Args:
        channels: Number of channels C.
        eps: Added to the variance for numerical stability.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (N, C, H, W) over C at every pixel."""
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"


class ConvNormReLU(nn.Sequential):
    """Convolution ("same" padding), channel LayerNorm, ReLU.

    Even kernels pad one pixel more after than before (as Flax/TF "SAME" do); the padding is an
    explicit layer because ``padding="same"`` with an even kernel copies and warns on every call.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        before = (kernel_size - 1) // 2
        after = kernel_size - 1 - before
        layers: list[nn.Module] = []
        if before == after:
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, padding=before))
        else:
            layers.append(nn.ZeroPad2d((before, after, before, after)))
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size))
        super().__init__(*layers, ChannelLayerNorm(out_channels), nn.ReLU(inplace=True))

    def normed(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution and norm without the ReLU, which the caller fuses with a copy it makes
        anyway (:func:`relu_into`); equals this layer's output before its ReLU.

        An even kernel runs with one pixel of zeros on every side and the norm's output is
        cropped by one pixel at the start: the same sums as the explicit padding, without
        copying the (wider) input into a padded tensor. The norm is per pixel, so cropping
        after it is exact.
        """
        conv, norm = self[-3], self[-2]
        assert isinstance(conv, nn.Conv2d)
        if not isinstance(self[0], nn.ZeroPad2d):
            return norm(conv(x))
        after = conv.kernel_size[0] // 2  # padding is (before, after) = (after - 1, after)
        y = norm(F.conv2d(x, conv.weight, conv.bias, padding=after))
        return y[..., 1:, 1:]


def relu_into(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write ReLU(``y``) into ``out`` (a channel slice of a concatenation), in one pass.

    Replaces a ReLU pass and ``torch.cat``'s copy; ``torch.cat`` along the channels of
    ``channels_last`` tensors is a slow strided copy on the CPU. With autograd (training) the
    ReLU is an op of its own, as ``out=`` arguments are not differentiable.
    """
    if y.requires_grad:
        out.copy_(y.relu())
    else:
        torch.clamp_min(y, 0.0, out=out)
    return out


class DoubleConv(nn.Sequential):
    """(conv3x3, norm, ReLU) x 2: the body of every encoder and decoder stage."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvNormReLU(in_channels, out_channels), ConvNormReLU(out_channels, out_channels)
        )

    def normed(self, x: torch.Tensor) -> torch.Tensor:
        """This stage's output before its last ReLU (see :meth:`ConvNormReLU.normed`)."""
        first, second = self
        assert isinstance(second, ConvNormReLU)
        return second.normed(first(x))


def upsample2(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear 2x upsampling, then edge-replicated to ``size`` (for odd sizes).

    A fixed factor of 2 keeps the sampling grid the same everywhere; interpolating straight to
    an odd size would stretch it slightly and shift every pixel, breaking tiled inference.
    """
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dh or dw:
        x = F.pad(x, (0, dw, 0, dh), mode="replicate")
    return x


class UpStage(nn.Module):
    """Decoder stage: 2x upsample to the skip's size, conv2x2, norm, ReLU, concat, 2 convs."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.up_conv = ConvNormReLU(in_channels, out_channels, kernel_size=2)
        self.body = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, joined: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` to the skip's size and fuse the two.

        ``joined`` ``(N, 2C, H, W)`` is the concatenation to fill: the encoder wrote the skip
        into its second half (:meth:`UNet._decode`); the up-convolution fills the first.
        """
        x = upsample2(x, joined.shape[-2:])
        relu_into(self.up_conv.normed(x), joined[:, : self.out_channels])
        return self.body(joined)


class UNet(nn.Module):
    """The paper's UNet with a segmentation head and optional PixelDINO / elevation heads.

    Any input size works (pooling floors, 2x upsampling is padded to the skip's size); with tile
    origins on the 16 px grid the network is translation-equivariant away from the edges, which
    tiled inference needs.
    Inputs are converted to ``channels_last``, the fast layout for convolutions on CPU and GPU.

    Args:
        in_channels: Input bands (normalized reflectance).
        widths: Channels of the encoder stages, shallow to deep.
        bottleneck: Channels at the bottleneck.
        dino_classes: K pseudo-classes of the PixelDINO head (None: no head; the paper uses 24).
        elevation: Add a 1x1 regression head for the elevation pretext task.
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...] = WIDTHS,
        bottleneck: int = BOTTLENECK,
        dino_classes: int | None = None,
        elevation: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if len(widths) < 2 or any(w < 1 for w in widths) or bottleneck < 1:
            raise ValueError(
                f"widths need at least two positive stages and bottleneck must be positive, "
                f"got widths={widths}, bottleneck={bottleneck}."
            )
        if dino_classes is not None and dino_classes < 2:
            raise ValueError(f"dino_classes must be at least 2 (or None), got {dino_classes}.")
        self.in_channels = in_channels
        self.widths = tuple(widths)
        self.bottleneck_width = bottleneck
        self.dino_classes = dino_classes
        self.has_elevation = elevation

        chans = (in_channels, *widths)
        self.down = nn.ModuleList(DoubleConv(a, b) for a, b in pairwise(chans))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-1], bottleneck)
        ups = (bottleneck, *reversed(widths))
        self.up = nn.ModuleList(UpStage(a, b) for a, b in pairwise(ups))
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.dino_head = nn.Conv2d(widths[1], dino_classes, 1) if dino_classes else None
        self.elevation_head = nn.Conv2d(widths[0], 1, 1) if elevation else None

    def architecture(self) -> dict[str, object]:
        """Describe the network for the weights card (enough to rebuild it)."""
        return {
            "type": "UNet",
            "in_channels": self.in_channels,
            "widths": list(self.widths),
            "bottleneck": self.bottleneck_width,
            "norm": "channel_layernorm_per_pixel",
            "dino_classes": self.dino_classes,
            "elevation": self.has_elevation,
        }

    def _decode(
        self, x: torch.Tensor, *, last_stage: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run encoder and decoder; return the last and the last-but-one decoder features.

        ``last_stage=False`` stops before the full-resolution decoder stage (then both returned
        tensors are the last-but-one features): the PixelDINO head needs no more.
        """
        x = x.contiguous(memory_format=torch.channels_last)
        joined = []
        for stage in self.down:
            assert isinstance(stage, DoubleConv)
            y = stage.normed(x)
            n, c, h, w = y.shape
            buf = torch.empty(
                (n, 2 * c, h, w), dtype=y.dtype, device=y.device, memory_format=torch.channels_last
            )
            relu_into(y, buf[:, c:])  # the skip, written where the decoder concatenates it
            joined.append(buf)
            x = self.pool(y).relu_()  # max-pooling commutes with ReLU: the ReLU on 1/4 of y
        x = self.bottleneck(x)
        prev = x
        stages = list(zip(self.up, reversed(joined), strict=True))
        for stage, buf in stages if last_stage else stages[:-1]:
            prev = x
            x = stage(x, buf)
        return (x, prev) if last_stage else (x, x)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with the modules composed plainly (explicit padding, a ReLU pass per
        layer, ``torch.cat``): what the fused path must equal (tests, ``bench/forward.py``)."""
        x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, skip in zip(self.up, reversed(skips), strict=True):
            assert isinstance(up, UpStage)
            x = up.up_conv(upsample2(x, skip.shape[-2:]))
            x = up.body(torch.cat([x, skip], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits ``(N, 1, H, W)`` for normalized input ``(N, C, H, W)``."""
        features, _ = self._decode(x)
        return self.head(features)

    def head_names(self) -> tuple[str, ...]:
        """The heads this network has: ``"logits"``, then ``"dino"``, ``"elevation"`` if built."""
        optional = {"dino": self.dino_head, "elevation": self.elevation_head}
        return ("logits", *(name for name, head in optional.items() if head is not None))

    def forward_heads(
        self, x: torch.Tensor, heads: Collection[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The ``heads`` asked for (all by default): ``"logits"`` (N, 1, H, W), ``"dino"``
        (N, K, H, W), ``"elevation"`` (N, 1, H, W).

        The PixelDINO head reads the last-but-one decoder stage (half resolution) and is
        upsampled bilinearly to the input size; when only it is asked for, the full-resolution
        decoder stage is skipped (a PixelDINO student's or teacher's unlabelled pass needs no more).
        Heads not asked for cost nothing and the ones returned are the same either way.
        """
        wanted = set(self.head_names() if heads is None else heads)
        unknown = wanted - set(self.head_names())
        if unknown:
            raise ValueError(
                f"this UNet has no head {sorted(unknown)}; it has {list(self.head_names())}."
            )
        features, half = self._decode(x, last_stage=bool(wanted & {"logits", "elevation"}))
        out = {}
        if "logits" in wanted:
            out["logits"] = self.head(features)
        if self.dino_head is not None and "dino" in wanted:
            out["dino"] = upsample2(self.dino_head(half), x.shape[-2:])
        if self.elevation_head is not None and "elevation" in wanted:
            out["elevation"] = self.elevation_head(features)
        return out

    def forward_dino(self, x: torch.Tensor) -> torch.Tensor:
        """The PixelDINO head alone, ``(N, K, H, W)``: ``forward_heads(x, ["dino"])["dino"]``."""
        if self.dino_head is None:
            raise ValueError("this UNet has no PixelDINO head (dino_classes=None).")
        return self.forward_heads(x, ("dino",))["dino"]


def build_unet(architecture: dict[str, object]) -> UNet:
    """Rebuild a :class:`UNet` from :meth:`UNet.architecture`'s description (a card's entry)."""
    if architecture.get("type", "UNet") != "UNet":
        raise ValueError(
            f"unknown architecture type {architecture.get('type')!r}; expected 'UNet'."
        )
    dino = architecture.get("dino_classes")
    return UNet(
        in_channels=int(architecture["in_channels"]),  # type: ignore[call-overload]
        widths=tuple(int(w) for w in architecture.get("widths", WIDTHS)),  # type: ignore[attr-defined]
        bottleneck=int(architecture.get("bottleneck", BOTTLENECK)),  # type: ignore[call-overload]
        dino_classes=None if dino is None else int(dino),  # type: ignore[call-overload]
        elevation=bool(architecture.get("elevation", False)),
    )
