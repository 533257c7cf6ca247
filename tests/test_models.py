"""The paper's network family: sizes, costs, torchvision equivalence, shortcut behaviour, measurements."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torchvision
from click.testing import CliRunner
from torch import nn

import models
from models.resnet import ZeroPadShortcut
from orchestrator.cli import main

# Paper Table 6 (parameters) and Table 1 (multiply-adds, paper layout, 224x224).
TABLE6_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6, 1202: 19.4e6}
TABLE1_MULT_ADDS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


@pytest.mark.parametrize("depth", sorted(TABLE6_PARAMS))
def test_cifar_parameter_counts_match_table6(depth):
    with torch.device("meta"):
        model = models.build_model(depth, shortcut="A", variant="cifar")
    assert models.count_parameters(model) == pytest.approx(TABLE6_PARAMS[depth], rel=0.02)


@pytest.mark.parametrize("depth", sorted(TABLE1_MULT_ADDS))
def test_imagenet_multiply_adds_match_table1(depth):
    with torch.device("meta"):
        model = models.build_model(depth, shortcut="B", variant="imagenet", stride_in_1x1=True)
    assert models.count_multiply_adds(model, (3, 224, 224)) == pytest.approx(TABLE1_MULT_ADDS[depth], rel=0.05)


ALL_NAMED = [(variant, name) for variant in models.VARIANTS for name in models.MODEL_FAMILY[variant]]


@pytest.mark.parametrize(("variant", "name"), ALL_NAMED)
def test_torch_free_multiply_adds_are_exact_for_every_named_network(variant, name):
    """`plan` and `resnetctl models` count with models.arch; FlopCounterMode on the built network agrees."""
    depth, residual, shortcut = models.parse_arch(name, variant=variant)
    spec = models.resolve_arch(depth, residual=residual, shortcut=shortcut, variant=variant)
    with torch.device("meta"):
        model = models.build_model(depth, residual=residual, shortcut=shortcut, variant=variant)
    assert models.multiply_adds(spec) == models.count_multiply_adds(model, models.INPUT_SIZES[variant])
    assert models.summarize(name, variant).layers == len(model.conv_bn_pairs()) + 1


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_torch_free_multiply_adds_follow_stride_placement_classes_and_size(stride_in_1x1):
    spec = models.resolve_arch(50, shortcut="C", variant="imagenet", num_classes=100)
    with torch.device("meta"):
        model = models.build_model(50, shortcut="C", variant="imagenet", num_classes=100, stride_in_1x1=stride_in_1x1)
    assert models.multiply_adds(spec, stride_in_1x1=stride_in_1x1) == models.count_multiply_adds(model)
    assert models.multiply_adds(spec, image_size=256, stride_in_1x1=stride_in_1x1) == models.count_multiply_adds(
        model, (3, 256, 256))


def test_v15_bottleneck_costs_more_than_the_paper_layout():
    with torch.device("meta"):
        paper = models.build_model(50, stride_in_1x1=True)
        v15 = models.build_model(50, stride_in_1x1=False)
    assert models.count_multiply_adds(v15) > models.count_multiply_adds(paper)
    assert models.count_parameters(v15) == models.count_parameters(paper)


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_option_b_v15_equals_torchvision(depth):
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    # make BN statistics non-trivial so a misplaced layer cannot hide behind identity BNs
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    ours = models.build_model(depth, shortcut="B", variant="imagenet", stride_in_1x1=False).eval()
    ours.load_state_dict(models.from_torchvision_state_dict(reference.state_dict()), strict=True)

    assert models.count_parameters(ours) == TORCHVISION_PARAMS[depth]
    assert models.count_parameters(reference) == TORCHVISION_PARAMS[depth]
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), reference(images), atol=1e-5, rtol=1e-5)


def _last_bn_zeroed(block: nn.Module) -> nn.Module:
    with torch.no_grad():
        block.last_bn.weight.zero_()
        block.last_bn.bias.zero_()
    return block.eval()


@pytest.mark.parametrize(("depth", "variant"), [(20, "cifar"), (18, "imagenet"), (50, "imagenet")])
def test_plain_blocks_pass_nothing_around_their_convs(depth, variant):
    """With a block's residual branch silenced, a plain block outputs zeros, a ResNet block its input."""
    plain = models.build_model(depth, residual=False, variant=variant)
    resnet = models.build_model(depth, shortcut="B" if variant == "imagenet" else "A", variant=variant)
    for plain_block, res_block in zip(plain.blocks(), resnet.blocks(), strict=True):
        channels = plain_block.conv1.in_channels
        x = torch.rand(1, channels, 8, 8) + 0.1  # positive, like the output of a ReLU
        with torch.no_grad():
            assert torch.count_nonzero(_last_bn_zeroed(plain_block)(x)) == 0
            if res_block.conv1.stride == (1, 1) and isinstance(res_block.shortcut, nn.Identity):
                torch.testing.assert_close(_last_bn_zeroed(res_block)(x), x)
    images = torch.randn(1, 3, 32, 32) if variant == "cifar" else torch.randn(1, 3, 64, 64)
    assert models.shortcut_additions(plain, images) == 0
    assert models.shortcut_additions(resnet, images) == len(resnet.blocks())


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0
    model = models.build_model(20, shortcut="A", variant="cifar")
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())


@pytest.mark.parametrize(
    ("shortcut", "expected_projections"), [("A", 0), ("B", 3), ("C", 16)]
)
def test_shortcut_options_project_where_the_paper_says(shortcut, expected_projections):
    model = models.build_model(34, shortcut=shortcut, variant="imagenet")
    projections = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(projections) == expected_projections


@pytest.mark.parametrize(("depth", "variant"), [(20, "cifar"), (34, "imagenet"), (50, "imagenet")])
def test_every_conv_is_followed_by_batch_norm_and_he_initialised(depth, variant):
    model = models.build_model(depth, shortcut="C" if variant == "imagenet" else "A", variant=variant)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns)
    assert all(conv.bias is None for conv in convs)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    big = max(convs, key=lambda c: c.weight.numel())
    fan_out = big.out_channels * big.kernel_size[0] * big.kernel_size[1]
    assert big.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1)
    assert all(torch.all(bn.weight == 1) for bn in bns)


def test_zero_init_residual_is_off_by_default_and_zeroes_last_bn_when_on():
    default = models.build_model(20, variant="cifar")
    assert all(torch.all(b.last_bn.weight == 1) for b in default.blocks())
    zeroed = models.build_model(20, variant="cifar", zero_init_residual=True)
    assert all(torch.all(b.last_bn.weight == 0) for b in zeroed.blocks())


def test_resnet1202_builds_and_runs_a_forward_pass():
    model = models.build_model(1202, shortcut="A", variant="cifar")
    assert len(model.conv_bn_pairs()) + 1 == 1202
    # training mode, as the paper runs it: BN normalises with batch statistics (untrained running
    # statistics in eval mode let 600 residual additions grow the activations without bound)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_layer_responses_one_per_3x3_conv_in_forward_order():
    torch.manual_seed(0)
    model = models.build_model(20, variant="cifar")
    images = torch.randn(4, 3, 32, 32)
    before = models.layer_responses(model, images)
    assert len(before) == 19  # stem + 9 blocks x 2
    # scale one BN: only its own response changes, by exactly that factor (eval mode: affine map)
    target = model.layer2[0].bn1  # stem (0) + layer1 (1..6) -> index 7
    with torch.no_grad():
        target.weight.mul_(5.0)
    after = models.layer_responses(model, images)
    assert after[7] == pytest.approx(5 * before[7], rel=1e-4)
    assert after[:7] == pytest.approx(before[:7], rel=1e-6)
    assert model.training  # measurement leaves the mode as it found it

    bottleneck = models.build_model(50, variant="imagenet")
    assert len(models.layer_responses(bottleneck, torch.randn(1, 3, 64, 64))) == 16  # one 3x3 per block


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"depth": 21, "variant": "cifar"}, "depth"),
        ({"depth": 40, "variant": "imagenet"}, "depth"),
        ({"depth": 50, "variant": "imagenet", "shortcut": "A"}, "shortcut"),
        ({"depth": 20, "variant": "cifar", "shortcut": "D"}, "shortcut"),
        ({"depth": 20, "variant": "mnist"}, "variant"),
        ({"depth": 20, "variant": "cifar", "num_classes": 0}, "num_classes"),
        ({"depth": 0}, "depth"),
        ({"depth": 27, "variant": "imagenet", "stage_blocks": (2, 2, 2, 2)}, "depth"),
    ],
)
def test_invalid_combinations_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument}="):
        models.build_model(**kwargs)


def test_custom_stage_sizes_allow_other_imagenet_depths():
    model = models.build_model(26, variant="imagenet", stage_blocks=(2, 2, 2, 2))  # 3 * 8 + 2: bottlenecks
    assert model.spec.block == "bottleneck"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet56", (56, True, "A")),
        ("resnet56-A", (56, True, "A")),
        ("plain34", (34, False, "plain")),
        ("resnet34-C", (34, True, "C")),
        ("resnet50", (50, True, "B")),
    ],
)
def test_readable_names_round_trip(name, expected):
    assert models.parse_arch(name) == expected
    depth, _residual, shortcut = expected
    assert models.parse_arch(models.arch_name(depth, shortcut)) == expected


@pytest.mark.parametrize("name", ["resnet", "plain34-B", "resnet34-D", "vgg16", ""])
def test_bad_names_are_rejected(name):
    with pytest.raises(ValueError, match="name="):
        models.parse_arch(name)


def test_build_from_name_matches_build_model():
    a = models.build_from_name("resnet34-C")
    b = models.build_model(34, shortcut="C", variant="imagenet")
    assert models.count_parameters(a) == models.count_parameters(b)


def test_models_command_lists_the_family_as_json_and_table():
    runner = CliRunner()
    result = runner.invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == set(models.MODEL_FAMILY["cifar"]) | set(models.MODEL_FAMILY["imagenet"])
    assert rows["resnet56-A"]["params"] == pytest.approx(0.85e6, rel=0.02)
    assert rows["resnet152-B"]["mult_adds"] == pytest.approx(11.3e9, rel=0.05)
    table = runner.invoke(main, ["models", "--variant", "cifar"])
    assert table.exit_code == 0
    assert "resnet1202-A" in table.output and "19.42M" in table.output
    assert "resnet50-B" not in table.output


def test_layer_responses_in_chunks_equal_the_one_pass_std():
    """Fig. 7 is measured chunk by chunk (GPU memory); the numbers are those of one pass over all images."""
    torch.manual_seed(0)
    model = models.build_model(20, variant="cifar")
    images = torch.randn(50, 3, 32, 32)
    one_pass: list[float] = []
    hooks = [bn.register_forward_hook(lambda _m, _i, out: one_pass.append(out.float().std().item()))
             for conv, bn in model.conv_bn_pairs() if conv.kernel_size == (3, 3)]
    model.eval()
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    chunked = models.layer_responses(model, images, chunk=7)
    assert len(chunked) == len(one_pass) == 19
    assert chunked == pytest.approx(one_pass, rel=1e-5)
    assert models.layer_responses(model, images, chunk=1000) == pytest.approx(chunked, rel=1e-5)
