"""Parameters of a training run (``arctic-rts train``) as small frozen dataclasses.

The same conventions as :mod:`arctic_rts.config`: one copy of each default, validation in
``__post_init__`` with :class:`~arctic_rts.errors.ConfigError`, never ``assert``. A TOML run
file fills them through :func:`arctic_rts.train.loop.load_train_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arctic_rts.bands import DOMAINS, validate_bands
from arctic_rts.errors import ConfigError

#: Training methods ``TrainConfig.method`` accepts; any of them may carry ``+elevation``.
TRAIN_METHODS: tuple[str, ...] = (
    "supervised",
    "supervised+aug",
    "fixmatchseg",
    "adversarial",
    "pixeldino",
)


def _check_range(name: str, lo_hi: tuple[float, float], low: float = 0.0) -> None:
    lo, hi = lo_hi
    if not low < lo <= hi:
        raise ConfigError(f"{name} must be an increasing pair above {low}, got {list(lo_hi)}.")


@dataclass(frozen=True)
class AugmentConfig:
    """Strong augmentation ranges (the paper's); weak augmentation is flips and rot90 only."""

    #: Largest rotation angle in degrees (uniform in +-rotation_deg).
    rotation_deg: float = 30.0
    #: Elastic warp: largest displacement in pixels of the smooth random field.
    elastic_alpha: float = 4.0
    #: Elastic warp: Gaussian smoothing of the random field in pixels.
    elastic_sigma: float = 8.0
    #: Random resized crop: zoom factor range (1 = whole patch, 2 = a quarter of it).
    zoom: tuple[float, float] = (1.0, 2.0)
    #: Gamma range (log-uniform), applied to reflectance clipped at 0.
    gamma: tuple[float, float] = (0.75, 1.33)
    #: Brightness: multiplicative factor in 1 +- brightness.
    brightness: float = 0.5
    #: Contrast: deviation from the per-sample mean scaled by 1 +- contrast.
    contrast: float = 0.5
    #: Gaussian blur sigma in pixels.
    blur_sigma: float = 2.0
    #: Probability of the blur.
    blur_p: float = 0.5
    #: Probability of each photometric change (gamma, brightness, contrast); 0 disables them.
    photometric_p: float = 1.0
    #: Augmentation of the labelled batch for methods that augment it: "strong" (weak, then
    #: the strong ranges above; the paper) or "weak" (flips and rot90 only). Unlabelled
    #: batches of the semi-supervised methods always get the strong view.
    labelled: str = "strong"

    def __post_init__(self) -> None:
        if self.labelled not in ("strong", "weak"):
            raise ConfigError(
                f"augment.labelled must be 'strong' or 'weak', got {self.labelled!r}."
            )
        _check_range("zoom", self.zoom, low=0.0)
        _check_range("gamma", self.gamma, low=0.0)
        for name in ("rotation_deg", "elastic_alpha", "elastic_sigma", "blur_sigma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("brightness", "contrast", "blur_p", "photometric_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"augment.{name} must lie in 0..1, got {getattr(self, name)}.")


@dataclass(frozen=True)
class PixelDINOConfig:
    """PixelDINO (Heidler et al. 2024, eqs. 1-4)."""

    #: K pseudo-classes of the PixelDINO head.
    classes: int = 24
    #: Teacher softmax temperature.
    teacher_temperature: float = 0.5
    #: Student softmax temperature.
    student_temperature: float = 1.0
    #: Weight of the PixelDINO loss against the supervised loss.
    beta: float = 0.1
    #: Teacher EMA momentum at step 0; it rises to 1 along a cosine over the run.
    teacher_momentum: float = 0.996
    #: EMA momentum of the centre (mean teacher output over batch, H and W).
    centre_momentum: float = 0.996

    def __post_init__(self) -> None:
        if self.classes < 2:
            raise ConfigError(f"pixeldino.classes must be at least 2, got {self.classes}.")
        if self.teacher_temperature <= 0 or self.student_temperature <= 0:
            raise ConfigError("pixeldino temperatures must be positive.")
        if self.beta < 0:
            raise ConfigError(f"pixeldino.beta must be >= 0, got {self.beta}.")
        for name in ("teacher_momentum", "centre_momentum"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"pixeldino.{name} must lie in 0..1, got {getattr(self, name)}.")


@dataclass(frozen=True)
class FixMatchConfig:
    """FixMatchSeg: hard pseudo-labels from the current model on the weak view."""

    #: Probability above which an unlabelled pixel becomes a slump pseudo-label.
    upper: float = 0.8
    #: Probability below which an unlabelled pixel becomes a background pseudo-label.
    lower: float = 0.2
    #: Weight of the unlabelled loss.
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.lower < self.upper <= 1:
            raise ConfigError(
                f"fixmatch needs 0 <= lower < upper <= 1, got {self.lower}, {self.upper}."
            )
        if self.weight < 0:
            raise ConfigError(f"fixmatch.weight must be >= 0, got {self.weight}.")


@dataclass(frozen=True)
class AdversarialConfig:
    """Adversarial semi-supervised segmentation (Hung et al. 2018)."""

    #: Weight of the adversarial loss on labelled predictions.
    lambda_adv: float = 0.01
    #: Weight of the adversarial loss on unlabelled predictions.
    lambda_adv_unlabelled: float = 0.001
    #: Weight of the self-taught loss on unlabelled pixels the discriminator trusts.
    lambda_semi: float = 0.1
    #: Discriminator confidence above which an unlabelled pixel joins the self-taught loss.
    semi_threshold: float = 0.2
    #: Step from which the self-taught loss is used (the discriminator needs a head start).
    semi_start: int = 0
    #: Learning rate of the discriminator's own Adam optimiser.
    lr: float = 1e-4
    #: Channels of the discriminator's first layer (doubled per layer, 4 layers).
    width: int = 32

    def __post_init__(self) -> None:
        if min(self.lambda_adv, self.lambda_adv_unlabelled, self.lambda_semi) < 0:
            raise ConfigError("adversarial loss weights must be >= 0.")
        if not 0 <= self.semi_threshold <= 1:
            raise ConfigError(
                f"adversarial.semi_threshold must lie in 0..1, got {self.semi_threshold}."
            )
        if self.lr <= 0 or self.width < 1 or self.semi_start < 0:
            raise ConfigError("adversarial.lr and width must be positive, semi_start >= 0.")


@dataclass(frozen=True)
class ElevationConfig:
    """Elevation pretext (Castano et al.): regress a coarse, per-patch standardised DEM."""

    #: Weight of the elevation MSE in the total loss.
    weight: float = 1.0
    #: Average-pooling factor that makes the DEM target (and the prediction) coarse.
    coarsen: int = 4

    def __post_init__(self) -> None:
        if self.weight < 0 or self.coarsen < 1:
            raise ConfigError("elevation.weight must be >= 0 and elevation.coarsen >= 1.")


@dataclass(frozen=True)
class TrainDataConfig:
    """Where training data comes from: a built patch dataset (zarr) or folders of image/mask pairs.

    Paths in a TOML run file are relative to that file.
    """

    #: Patch dataset written by ``arctic-rts dataset build`` (a ``.zarr`` folder).
    dataset: str | None = None
    #: Folder of labelled images (GeoTIFF/PNG/JPEG), paired with ``masks`` by file name.
    images: str | None = None
    #: Folder of masks (0/1 or 0/255) with the images' file names.
    masks: str | None = None
    #: Folder (or zarr dataset) of unlabelled images for semi-supervised methods.
    unlabelled: str | None = None
    #: Validation images and masks (folders), or val_images = a .zarr patch dataset (its
    #: labelled group); None: the dataset's own "val" group, if any.
    val_images: str | None = None
    val_masks: str | None = None
    #: Bands (canonical names) in input order; None: the dataset's own.
    bands: tuple[str, ...] | None = None
    #: Training patch edge in pixels (a multiple of 16); smaller images are padded (ignored).
    patch_size: int = 192

    def __post_init__(self) -> None:
        if self.bands is not None:
            object.__setattr__(self, "bands", validate_bands(self.bands))
        if self.patch_size < 16 or self.patch_size % 16:
            raise ConfigError(
                f"patch_size must be a positive multiple of 16, got {self.patch_size}."
            )
        if self.dataset is None and (self.images is None or self.masks is None):
            raise ConfigError(
                "data needs either 'dataset' (a built .zarr) or both 'images' and 'masks'."
            )


@dataclass(frozen=True)
class TrainConfig:
    """One training run (``arctic-rts train --config FILE.toml``); defaults are the paper's."""

    data: TrainDataConfig
    #: One of TRAIN_METHODS, optionally with "+elevation".
    method: str = "pixeldino"
    #: Output folder: checkpoints, log, final weights.
    out_dir: str = "runs/train"
    #: Name written into the weights card.
    name: str = "arctic-rts-unet"
    #: Free text the card keeps as ``training.notes``: why this recipe, what it replaced.
    notes: str = ""
    #: UNet encoder widths and bottleneck.
    widths: tuple[int, ...] = (16, 32, 64, 128)
    bottleneck: int = 256
    #: Optimiser steps.
    steps: int = 200_000
    #: Labelled and unlabelled patches per step.
    batch_size: int = 16
    unlabelled_batch_size: int = 16
    #: AdamW peak learning rate (warmup-cosine schedule) and weight decay.
    lr: float = 1e-3
    weight_decay: float = 1e-3
    #: Linear warmup steps before the cosine decay.
    warmup_steps: int = 1000
    seed: int = 0
    #: "auto" (CUDA when available), "cpu" or "cuda[:N]".
    device: str = "auto"
    #: Mixed precision (CUDA only).
    amp: bool = False
    #: Validate, checkpoint and log every N steps (0 disables validation/checkpoints).
    val_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    #: Continue from ``out_dir/checkpoint.safetensors`` when it exists.
    resume: bool = True
    #: Probability threshold written into the card.
    threshold: float = 0.5
    #: Imagery domain of the training data (a key of :data:`arctic_rts.bands.DOMAINS`): the
    #: map run refuses a "generated-demo" model on real catalogs.
    domain: str = "sentinel-2-l2a"
    #: Folder the card names the training data relative to (paths outside it are named by
    #: their last component); None: the run file's folder.
    data_root: str | None = None
    #: Expected share of each labelled batch drawn from patches that contain slumps (0: uniform
    #: sampling, as in the paper). Where slumps cover ~1 % of the pixels, uniform batches first
    #: teach the network the prior and little else in a short CPU run.
    positive_share: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pixeldino: PixelDINOConfig = field(default_factory=PixelDINOConfig)
    fixmatch: FixMatchConfig = field(default_factory=FixMatchConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    elevation: ElevationConfig = field(default_factory=ElevationConfig)

    def __post_init__(self) -> None:
        base = self.method.removesuffix("+elevation")
        if base not in TRAIN_METHODS:
            raise ConfigError(
                f"unknown method {self.method!r}; choose one of {', '.join(TRAIN_METHODS)} "
                "(optionally with '+elevation')."
            )
        if self.steps < 1 or self.batch_size < 1 or self.unlabelled_batch_size < 1:
            raise ConfigError("steps, batch_size and unlabelled_batch_size must be positive.")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError("lr must be positive, weight_decay and warmup_steps >= 0.")
        if min(self.val_every, self.checkpoint_every) < 0 or self.log_every < 1:
            raise ConfigError("val_every and checkpoint_every must be >= 0, log_every >= 1.")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must lie strictly between 0 and 1, got {self.threshold}.")
        if not 0 <= self.positive_share < 1:
            raise ConfigError(f"positive_share must lie in 0..1, got {self.positive_share}.")
        if self.domain not in DOMAINS:
            raise ConfigError(
                f"unknown domain {self.domain!r}; choose one of {', '.join(DOMAINS)}."
            )

    def logs_step(self, step: int) -> bool:
        """Whether the run's log records the step that brings it to ``step`` steps done (every
        ``log_every`` and the last); methods compute log-only figures on those steps alone."""
        return step % self.log_every == 0 or step == self.steps
