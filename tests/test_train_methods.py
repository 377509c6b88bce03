"""The training methods pinned to the paper's equations (1)-(4) and to Hung et al. / FixMatchSeg."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from arctic_rts.errors import ConfigError
from arctic_rts.model.unet import UNet
from arctic_rts.train.augment import weak_augment
from arctic_rts.train.config import AugmentConfig, PixelDINOConfig, TrainConfig, TrainDataConfig
from arctic_rts.train.methods import METHODS, NormalizedNet, build_method
from arctic_rts.train.methods.adversarial import Adversarial
from arctic_rts.train.methods.elevation import elevation_loss
from arctic_rts.train.methods.fixmatchseg import FixMatchSeg
from arctic_rts.train.methods.pixeldino import PixelDINO, teacher_momentum

C, S = 3, 32


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """One intra-op thread: on a shared 2-core machine more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(method: str, **kw: object) -> TrainConfig:
    return TrainConfig(data=TrainDataConfig(dataset="unused.zarr"), method=method, **kw)  # type: ignore[arg-type]


def _net(method_heads: dict[str, object], seed: int = 0) -> NormalizedNet:
    torch.manual_seed(seed)
    unet = UNet(C, widths=(4, 8, 16, 32), bottleneck=32, **method_heads)  # type: ignore[arg-type]
    return NormalizedNet(unet, [0.1] * C, [0.05] * C)


def _batches(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(2, C, S, S, generator=g) * 0.3
    labelled = {
        "image": image,
        "mask": (image[:, :1] > 0.15).float(),
        "valid": torch.ones(2, 1, S, S),
    }
    unlabelled = {
        "image": torch.rand(2, C, S, S, generator=g) * 0.3,
        "valid": torch.ones(2, 1, S, S),
    }
    return labelled, unlabelled


def _method(name: str, **kw: object):  # type: ignore[no-untyped-def]
    method = build_method(_config(name, **kw))
    net = _net(method.model_heads())
    method.setup(net)
    return method, net


def test_every_method_is_selectable_by_name() -> None:
    assert set(METHODS) == {
        "supervised",
        "supervised+aug",
        "fixmatchseg",
        "adversarial",
        "pixeldino",
    }
    assert build_method(_config("pixeldino+elevation")).name == "pixeldino+elevation"
    with pytest.raises(ConfigError, match="unknown method"):
        _config("mean-teacher")


@pytest.mark.parametrize("name", ["fixmatchseg", "adversarial", "pixeldino"])
def test_a_semi_supervised_step_without_unlabelled_data_names_the_setting(name: str) -> None:
    method, net = _method(name)
    labelled, _ = _batches()
    method.begin_step()
    with pytest.raises(ValueError, match=f"^{name} needs unlabelled data: set data.unlabelled"):
        method.loss(net, labelled, None, 0, torch.Generator().manual_seed(3))


def test_teacher_labels_are_probability_maps() -> None:
    method, _ = _method("pixeldino")
    assert isinstance(method, PixelDINO)
    _, unlabelled = _batches()
    method.centre += torch.randn_like(method.centre)  # type: ignore[operator]
    p = method.teacher_probabilities(unlabelled["image"])
    assert p.shape == (2, 24, S, S)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(dim=1), torch.ones(2, S, S), atol=1e-5)


def test_teacher_entropies_are_logged_and_bounded_by_ln_k() -> None:
    method, net = _method("pixeldino", log_every=2)
    assert isinstance(method, PixelDINO)
    labelled, unlabelled = _batches()
    method.begin_step()
    # the first step (0 done before it) is not logged with log_every=2: no entropies computed
    logs = method.loss(net, labelled, unlabelled, 0, torch.Generator().manual_seed(3)).logs
    assert "teacher_entropy" not in logs and "dino" in logs
    method.begin_step()
    logs = method.loss(net, labelled, unlabelled, 1, torch.Generator().manual_seed(3)).logs
    ln_k = math.log(24)
    assert 0 < logs["teacher_entropy"] <= logs["teacher_marginal_entropy"] + 1e-6
    assert logs["teacher_marginal_entropy"] <= ln_k + 1e-6
    # a sharper teacher temperature lowers the per-pixel entropy of the same outputs
    sharp = PixelDINO(_config("pixeldino", pixeldino=PixelDINOConfig(teacher_temperature=0.01)))
    sharp.setup(net)
    sharp.teacher_probabilities(unlabelled["image"])
    method.teacher_probabilities(unlabelled["image"])
    assert sharp._entropies["teacher_entropy"] < method._entropies["teacher_entropy"]


def test_teacher_and_centre_follow_their_ema() -> None:
    method, net = _method("pixeldino")
    assert isinstance(method, PixelDINO)
    labelled, unlabelled = _batches()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    teacher_before = copy.deepcopy(method.teacher.state_dict())  # type: ignore[union-attr]
    centre_before = method.centre.clone()  # type: ignore[union-attr]
    method.begin_step()
    result = method.loss(net, labelled, unlabelled, 10, torch.Generator().manual_seed(11))
    batch_mean = method._batch_centre.clone()  # type: ignore[union-attr]
    # replay the step's random draws to get the weak view the teacher saw
    gen = torch.Generator().manual_seed(11)
    method.augment_labelled(labelled, gen)
    weak = weak_augment(unlabelled, gen)
    with torch.no_grad():
        raw = method.teacher.forward_heads(weak["image"])["dino"]  # type: ignore[union-attr]
    assert torch.allclose(batch_mean, raw.mean(dim=(0, 2, 3), keepdim=True), atol=1e-6)
    opt.zero_grad()
    result.loss.backward()
    opt.step()
    method.after_step(net, 10, 100)
    m = teacher_momentum(10, 100, 0.996)
    student = dict(net.named_parameters())
    moved = 0
    for name, p_t in method.teacher.named_parameters():  # type: ignore[union-attr]
        expected = m * teacher_before[name] + (1 - m) * student[name].detach()
        assert torch.allclose(p_t, expected, atol=1e-7), name
        moved += int(not torch.equal(p_t, teacher_before[name]))
    assert moved > 0
    mc = 0.996
    assert torch.allclose(method.centre, mc * centre_before + (1 - mc) * batch_mean, atol=1e-7)  # type: ignore[arg-type]


def test_teacher_momentum_is_a_cosine_from_start_to_one() -> None:
    assert teacher_momentum(0, 1000, 0.996) == pytest.approx(0.996)
    assert teacher_momentum(500, 1000, 0.996) == pytest.approx(0.998)
    assert teacher_momentum(1000, 1000, 0.996) == pytest.approx(1.0)
    assert teacher_momentum(250, 1000, 0.996) == pytest.approx(
        1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2
    )


def _grads(method_name: str, **kw: object) -> dict[str, torch.Tensor]:
    method, net = _method(method_name, **kw)
    labelled, unlabelled = _batches()
    method.begin_step()
    result = method.loss(net, labelled, unlabelled, 0, torch.Generator().manual_seed(7))
    result.loss.backward()
    return {
        n: p.grad.clone()
        for n, p in net.named_parameters()
        if p.grad is not None and "dino_head" not in n
    }


def test_pixeldino_with_beta_zero_has_the_supervised_gradients() -> None:
    g_sup = _grads("supervised+aug")
    g_dino = _grads("pixeldino", pixeldino=PixelDINOConfig(beta=0.0))
    g_dino_on = _grads("pixeldino")
    assert set(g_sup) <= set(g_dino)
    for name, g in g_sup.items():
        assert torch.allclose(g, g_dino[name], atol=1e-7), name
    # and beta > 0 really changes them (the test above is not vacuous)
    assert any(not torch.allclose(g, g_dino_on[n], atol=1e-6) for n, g in g_sup.items())


def test_fixmatch_pseudo_labels_come_from_the_current_model() -> None:
    method, net = _method("fixmatchseg")
    assert isinstance(method, FixMatchSeg)
    _, unlabelled = _batches()
    with torch.no_grad():
        net.unet.head.bias.fill_(-20.0)
    mask_a, conf_a = method.pseudo_labels(net, unlabelled["image"])
    with torch.no_grad():
        net.unet.head.bias.fill_(20.0)
    mask_b, conf_b = method.pseudo_labels(net, unlabelled["image"])
    assert mask_a.sum() == 0 and mask_b.all()
    assert conf_a.all() and conf_b.all()
    with torch.no_grad():
        net.unet.head.bias.fill_(0.0)
        net.unet.head.weight.zero_()
    _, conf_c = method.pseudo_labels(net, unlabelled["image"])
    assert conf_c.sum() == 0  # p = 0.5 everywhere: between 0.2 and 0.8, nothing confident


def test_adversarial_generator_loss_uses_the_discriminator() -> None:
    method, net = _method("adversarial")
    assert isinstance(method, Adversarial)
    labelled, unlabelled = _batches()
    with torch.no_grad():
        logits_l = net(labelled["image"])
        logits_u = net(unlabelled["image"])
    args = (logits_l, labelled["valid"], logits_u, unlabelled["valid"], 0)
    before, _ = method.generator_loss(*args)
    with torch.no_grad():
        for p in method.discriminator.parameters():  # type: ignore[union-attr]
            p.add_(0.1 * torch.randn_like(p))
    after, _ = method.generator_loss(*args)
    assert not torch.isclose(before, after)
    # and the discriminator's own step changes it too
    d_before = copy.deepcopy(method.discriminator.state_dict())  # type: ignore[union-attr]
    method.begin_step()
    method.loss(net, labelled, unlabelled, 0, torch.Generator().manual_seed(0))
    method.after_step(net, 0, 10)
    changed = [
        not torch.equal(v, d_before[k])
        for k, v in method.discriminator.state_dict().items()  # type: ignore[union-attr]
    ]
    assert any(changed)


def test_elevation_loss_is_zero_for_the_right_relative_dem_and_trains_the_head() -> None:
    dem = torch.linspace(100, 140, S).view(1, 1, 1, S).repeat(2, 1, S, 1)
    valid = torch.ones(2, 1, S, S)
    target = (dem - dem.mean(dim=(1, 2, 3), keepdim=True)) / dem.std(
        dim=(1, 2, 3), keepdim=True, unbiased=False
    )
    assert float(elevation_loss(target, dem, valid, 4)) < 1e-8
    assert float(elevation_loss(torch.zeros_like(dem), dem, valid, 4)) > 0.5

    method, net = _method("supervised+elevation")
    labelled, _ = _batches()
    labelled["dem"] = dem
    method.begin_step()
    result = method.loss(net, labelled, None, 0, torch.Generator().manual_seed(0))
    assert "elevation" in result.logs
    result.loss.backward()
    assert net.unet.elevation_head.weight.grad.abs().sum() > 0  # type: ignore[union-attr]


def test_losses_ignore_pixels_outside_the_image() -> None:
    from arctic_rts.train.methods.base import bce_loss

    logits = torch.randn(1, 1, 8, 8)
    target = (logits > 0).float()
    valid = torch.ones(1, 1, 8, 8)
    valid[..., :4] = 0
    wrong = target.clone()
    wrong[..., :4] = 1 - wrong[..., :4]  # garbage labels where the transform read outside
    assert torch.equal(bce_loss(logits, target, valid), bce_loss(logits, wrong, valid))
    assert not torch.equal(
        bce_loss(logits, target, torch.ones_like(valid)),
        bce_loss(logits, wrong, torch.ones_like(valid)),
    )


def test_labelled_augmentation_can_be_weak_only() -> None:
    labelled, _ = _batches()
    strong, _ = _method("pixeldino")
    weak, _ = _method("pixeldino", augment=AugmentConfig(labelled="weak"))
    got_weak = weak.augment_labelled(labelled, torch.Generator().manual_seed(1))
    expected = weak_augment(labelled, torch.Generator().manual_seed(1))
    for key in ("image", "mask", "valid"):
        assert torch.equal(got_weak[key], expected[key])
    # the default (the paper's) goes on to the strong view: resampled pixels, some ignored
    got_strong = strong.augment_labelled(labelled, torch.Generator().manual_seed(1))
    assert not torch.equal(got_strong["image"], expected["image"])
    with pytest.raises(ConfigError, match=r"augment\.labelled"):
        AugmentConfig(labelled="none")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pixeldino", [{"logits"}, {"dino"}]),
        ("pixeldino+elevation", [{"logits", "elevation"}, {"dino", "elevation"}]),
    ],
)
def test_a_pixeldino_step_computes_the_heads_its_losses_read(
    name: str, expected: list[set[str]]
) -> None:
    """The student's labelled pass skips the DINO head and its unlabelled pass the segmentation
    head and full-resolution stage, unless the elevation pretext reads that stage's head."""
    method, net = _method(name)
    last_stage_runs = []
    net.unet.up[-1].register_forward_hook(lambda *_: last_stage_runs.append(1))
    labelled, unlabelled = _batches()
    for batch in (labelled, unlabelled):
        batch["dem"] = torch.rand(2, 1, S, S)
    method.begin_step()
    method.loss(net, labelled, unlabelled, 0, torch.Generator().manual_seed(7))
    records = getattr(method, "base", method).records
    assert [set(heads) for heads, _ in records] == expected
    # the teacher is a copy with its own modules: only the student's passes are counted
    assert len(last_stage_runs) == sum("logits" in h or "elevation" in h for h in expected)


def test_teacher_head_alone_equals_the_full_pass() -> None:
    """The teacher's shortened pass (no full-resolution stage) gives the same DINO logits."""
    net = _net({"dino_classes": 24})
    _, unlabelled = _batches()
    with torch.no_grad():
        full = net.forward_heads(unlabelled["image"])["dino"]
        alone = net.forward_dino(unlabelled["image"])
    assert alone.shape == full.shape
    assert torch.allclose(alone, full, atol=1e-6)
    with pytest.raises(ValueError, match="no PixelDINO head"):
        _net({}).forward_dino(unlabelled["image"])
