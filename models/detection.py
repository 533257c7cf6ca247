"""Faster R-CNN (torchvision's RPN and RoI heads) around our ResNets, arranged as the paper's Appendix A.

"We compute the full-image shared conv feature maps using those layers whose strides on the image
are no greater than 16 pixels (i.e., conv1, conv2_x, conv3_x, and conv4_x ...). RoI pooling is
performed before conv5_1. On this RoI-pooled feature, all layers of conv5_x and up are adopted for
each region, playing the roles of VGG-16's fc layers. The final classification layer is replaced by
two sibling layers (classification and box regression)." So arrangement `c4`: the trunk is conv1 ..
layer3 (stride 16), one anchor map with Faster R-CNN's 3 scales x 3 aspect ratios, RoI max pooling
(Fast R-CNN's; RoIAlign as an option) to 14 x 14, then layer4 (its stride 2 gives 7 x 7) and the
average pool per region, then the two sibling layers. "The BN layers are fixed during fine-tuning":
every BN becomes torchvision's `FrozenBatchNorm2d` with the statistics it was trained with.

Arrangement `fpn` is a departure, for comparison: torchvision's feature pyramid on layer1..layer4
with its default multi-level anchors, RoIAlign and two-layer MLP head.

Our ResNet keeps torchvision's layer names (conv1, bn1, layer1..layer4), so a classification model's
state dict loads into the backbone unchanged (its `fc` is dropped). torchvision's own
`IntermediateLayerGetter` cannot wrap it: it calls the children in registration order, and ours
registers `maxpool` before `bn1`; the stages below run the stem in forward order.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from models.resnet import ResNet, build_from_name

# Faster R-CNN's anchors (Sec. 3.1.1): 3 scales x 3 aspect ratios on the stride-16 map
C4_ANCHOR_SIZES = (128, 256, 512)
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
C4_STRIDE = 16
FREEZABLE = ("layer4", "layer3", "layer2", "layer1", "conv1")  # torchvision's trainable_layers order


@dataclass(frozen=True)
class DetectorSettings:
    """How the detector is put together and scored; `training.detection_config.DetectionConfig` fills it."""

    arrangement: str = "c4"  # "c4" (the paper) | "fpn"
    roi_op: str = "pool"  # "pool" (Fast R-CNN's RoI max pooling) | "align"
    roi_size: int = 14
    min_size: int = 600
    max_size: int = 1000
    image_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # 0-255, RGB
    image_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    trainable_layers: int = 3
    freeze_bn: bool = True
    rpn_pre_nms_train: int = 12000
    rpn_pre_nms_test: int = 6000
    rpn_post_nms_train: int = 2000
    rpn_post_nms_test: int = 300
    rois_per_image: int = 128
    score_thresh: float = 0.05
    nms_thresh: float = 0.3
    detections_per_image: int = 100


def stage_channels(net: ResNet) -> tuple[int, ...]:
    """Output channels of each stage (layer1..layer4)."""
    return tuple(width * net.spec.expansion for width in net.spec.stage_widths)


class ResNetStages(nn.Module):
    """The ResNet's stem and stages in forward order; returns the outputs of `returned` stages by index name."""

    def __init__(self, net: ResNet, last: int, returned: tuple[int, ...]):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        for i in range(1, last + 1):
            self.add_module(f"layer{i}", getattr(net, f"layer{i}"))
        self.last, self.returned = last, returned

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i in range(1, self.last + 1):
            x = getattr(self, f"layer{i}")(x)
            if i in self.returned:
                out[str(self.returned.index(i))] = x
        return out


class C4Trunk(ResNetStages):
    """conv1 .. conv4_x, shared by the RPN and the per-region head: one stride-16 map."""

    def __init__(self, net: ResNet):
        super().__init__(net, last=3, returned=(3,))
        self.out_channels = stage_channels(net)[2]


class C4BoxHead(nn.Module):
    """conv5_x and the average pool, run on each RoI-pooled region (the paper's replacement for VGG's fc)."""

    def __init__(self, net: ResNet):
        super().__init__()
        self.layer4, self.avgpool = net.layer4, net.avgpool
        self.out_features = net.spec.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.layer4(x)), 1)


class RoIPoolStride16(nn.Module):
    """RoI pooling of the single stride-16 map (torchvision's RoIHeads calls it like MultiScaleRoIAlign)."""

    def __init__(self, output_size: int, op: str):
        super().__init__()
        self.output_size, self.op = (output_size, output_size), op

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes) -> torch.Tensor:
        from torchvision.ops import roi_align, roi_pool

        x = features["0"]
        if self.op == "align":
            return roi_align(x, proposals, self.output_size, 1.0 / C4_STRIDE, sampling_ratio=0, aligned=True)
        return roi_pool(x, proposals, self.output_size, 1.0 / C4_STRIDE)


class FPNBackbone(nn.Module):
    """layer1..layer4 through torchvision's feature pyramid (the departure arrangement)."""

    def __init__(self, net: ResNet, out_channels: int = 256):
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        self.body = ResNetStages(net, last=4, returned=(1, 2, 3, 4))
        self.fpn = FeaturePyramidNetwork(list(stage_channels(net)), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def load_backbone_weights(net: ResNet, state: dict[str, torch.Tensor]) -> None:
    """A classification model's weights into `net`, its classifier (`fc`) excepted; ValueError on any mismatch."""
    kept = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = net.load_state_dict(kept, strict=False)
    except RuntimeError as exc:  # a shape differs: another depth or shortcut option
        raise ValueError(f"the backbone's weights do not fit {net.spec.name}: {str(exc).splitlines()[0]}") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"the backbone's weights do not fit {net.spec.name}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


def freeze(net: ResNet, trainable_layers: int, freeze_bn: bool) -> ResNet:
    """Freeze all but the last `trainable_layers` of (layer4, layer3, layer2, layer1, conv1); BN to frozen statistics.

    The stem's conv1 and bn1 are one group, "conv1"; the classifier (unused by the detector) stays as it is.
    """
    if not 0 <= trainable_layers <= len(FREEZABLE):
        raise ValueError(f"trainable_layers={trainable_layers}: 0..{len(FREEZABLE)}")
    trainable = FREEZABLE[:trainable_layers]
    for name, param in net.named_parameters():
        group = name.split(".", 1)[0]
        group = "conv1" if group == "bn1" else group
        if group in FREEZABLE and group not in trainable:
            param.requires_grad_(False)
    return _frozen_batchnorm(net) if freeze_bn else net


def _frozen_batchnorm(module: nn.Module) -> nn.Module:
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            _frozen_batchnorm(child)
    return module


def build_detector(arch: str, num_classes: int, settings: DetectorSettings, *, stride_in_1x1: bool = True,
                   backbone_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Faster R-CNN for `num_classes` object classes (plus background) on ImageNet-layout `arch` ("resnet101-B")."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    net = build_from_name(arch, variant="imagenet", stride_in_1x1=stride_in_1x1)
    if backbone_state is not None:
        load_backbone_weights(net, backbone_state)
    net = freeze(net, settings.trainable_layers, settings.freeze_bn)
    common = dict(min_size=settings.min_size, max_size=settings.max_size, image_mean=list(settings.image_mean),
                  image_std=list(settings.image_std), rpn_pre_nms_top_n_train=settings.rpn_pre_nms_train,
                  rpn_pre_nms_top_n_test=settings.rpn_pre_nms_test,
                  rpn_post_nms_top_n_train=settings.rpn_post_nms_train,
                  rpn_post_nms_top_n_test=settings.rpn_post_nms_test,
                  box_batch_size_per_image=settings.rois_per_image, box_score_thresh=settings.score_thresh,
                  box_nms_thresh=settings.nms_thresh, box_detections_per_img=settings.detections_per_image)
    if settings.arrangement == "fpn":
        return FasterRCNN(FPNBackbone(net), num_classes=num_classes + 1, **common)
    head = C4BoxHead(net)
    detector = FasterRCNN(
        C4Trunk(net), rpn_anchor_generator=AnchorGenerator((C4_ANCHOR_SIZES,), (ANCHOR_RATIOS,)),
        # FasterRCNN only accepts a MultiScaleRoIAlign here; the stride-16 pooling replaces it below
        box_roi_pool=MultiScaleRoIAlign(["0"], settings.roi_size, 0), box_head=head,
        box_predictor=FastRCNNPredictor(head.out_features, num_classes + 1), **common)
    detector.roi_heads.box_roi_pool = RoIPoolStride16(settings.roi_size, settings.roi_op)
    return detector
