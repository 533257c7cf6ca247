"""Faster R-CNN around our ResNets (the paper's C4 arrangement and FPN), the backbone's ImageNet weights, and
the detection trainer's epochs, test and checkpoint resume on a tiny generated VOC set."""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from models import build_from_name
from models.detection import C4BoxHead, C4Trunk, DetectorSettings, RoIPoolStride16, build_detector
from training.detection import DetectionTrainer
from training.detection_config import DetectionConfig

TINY = DetectorSettings(min_size=64, max_size=96, roi_size=7, rois_per_image=8, rpn_post_nms_train=32,
                        rpn_post_nms_test=16)


def _targets():
    return [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 50.0]]), "labels": torch.tensor([3])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]


def test_c4_shares_conv1_to_conv4_at_stride_16_and_runs_conv5_per_region():
    detector = build_detector("resnet18-B", 20, TINY)
    trunk, head = detector.backbone, detector.roi_heads.box_head
    assert isinstance(trunk, C4Trunk) and isinstance(head, C4BoxHead)
    assert not hasattr(trunk, "layer4") and trunk.out_channels == 256
    assert isinstance(detector.roi_heads.box_roi_pool, RoIPoolStride16)
    features = trunk(torch.zeros(1, 3, 64, 96))
    assert features["0"].shape == (1, 256, 4, 6)  # stride 16
    assert head(torch.zeros(5, 256, 7, 7)).shape == (5, 512)
    assert detector.roi_heads.box_predictor.cls_score.out_features == 21  # 20 classes + background


def test_bn_is_frozen_and_conv1_and_conv2_x_do_not_train_by_default():
    detector = build_detector("resnet18-B", 20, TINY)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in detector.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in detector.modules())
    trunk = detector.backbone
    assert not trunk.conv1.weight.requires_grad and not any(p.requires_grad for p in trunk.layer1.parameters())
    assert all(p.requires_grad for p in trunk.layer2.parameters())
    assert all(p.requires_grad for p in detector.roi_heads.box_head.parameters())
    trained = build_detector("resnet18-B", 20, DetectorSettings(trainable_layers=5, freeze_bn=False))
    assert trained.backbone.conv1.weight.requires_grad
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.modules())


def test_the_backbone_starts_from_a_classification_models_weights_fc_dropped():
    torch.manual_seed(3)
    imagenet = build_from_name("resnet18-B", variant="imagenet")
    for module in imagenet.modules():  # BN statistics as a trained network has them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    detector = build_detector("resnet18-B", 20, TINY, backbone_state=imagenet.state_dict())
    assert torch.equal(detector.backbone.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(detector.roi_heads.box_head.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert torch.equal(detector.backbone.layer3[0].bn1.running_var, imagenet.layer3[0].bn1.running_var)
    with pytest.raises(ValueError, match="do not fit resnet18-B"):
        build_detector("resnet18-B", 20, TINY, backbone_state=build_from_name("resnet34-B").state_dict())


@pytest.mark.parametrize("arrangement", ["c4", "fpn"])
def test_both_arrangements_train_and_detect(arrangement):
    torch.manual_seed(0)
    settings = DetectorSettings(**{**TINY.__dict__, "arrangement": arrangement, "freeze_bn": False})
    detector = build_detector("resnet18-B", 20, settings)
    images = [torch.rand(3, 60, 80) * 255, torch.rand(3, 70, 64) * 255]
    losses = detector(images, _targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    detector.eval()
    with torch.no_grad():
        outputs = detector(images)
    for output, image in zip(outputs, images, strict=True):  # boxes in the image's own pixels
        assert output["boxes"].shape[1] == 4 and (output["boxes"][:, 2] <= image.shape[2] + 1e-3).all()


def _config(**changes) -> DetectionConfig:
    values = dict(train_splits=("2007_trainval",), test_split="2007_test", batch_size=2, lr=0.01, iterations=5,
                  lr_milestones=(4,), min_size=64, max_size=96, roi_size=7, rois_per_image=8, rpn_proposals_train=32,
                  rpn_proposals_test=16, num_workers=0)
    return DetectionConfig(**{**values, **changes})


def test_trainer_epochs_schedule_and_final_map(voc_root):
    torch.set_num_threads(1)
    trainer = DetectionTrainer(_config(), arch="resnet18-B", dataset="voc2007", dataset_path=str(voc_root), seed=0)
    assert trainer.steps_per_epoch == 3  # 6 training images, 2 per step
    first = trainer.run_epoch()
    assert first["iteration"] == 3 and first["lr"] == 0.01 and "test_map_voc07" not in first
    last = trainer.run_epoch()  # 2 more steps reach the 5 iterations, past the milestone at 4
    assert trainer.done and last["iteration"] == 5 and last["lr"] == pytest.approx(0.001)
    assert last["test_images"] == 4 and 0 <= last["test_map_voc07"] <= 100 and 0 <= last["test_map_voc"] <= 100
    assert trainer.curves["epoch"] == [1, 2]


def test_a_resumed_trainer_ends_with_the_weights_of_an_uninterrupted_one(voc_root):
    torch.set_num_threads(1)

    def trainer():
        return DetectionTrainer(_config(iterations=6, max_eval_images=1), arch="resnet18-B", dataset="voc2007",
                                dataset_path=str(voc_root), seed=1, run_key="cell")

    straight = trainer()
    straight.run_epoch()
    saved = copy.deepcopy(straight.state_dict())  # what a checkpoint holds: not the live optimizer buffers
    straight.run_epoch()
    resumed = trainer()
    resumed.load_state_dict(saved)
    resumed.run_epoch()
    for key, value in straight.net.state_dict().items():
        assert torch.allclose(value.float(), resumed.net.state_dict()[key].float(), atol=1e-6), key
    with pytest.raises(ValueError, match="belongs to cell"):
        resumed.load_state_dict({**saved, "cell_id": "other"})


DDP_SCRIPT = '''
import os, socket, sys
import torch, torch.distributed as dist, torch.multiprocessing as mp

def work(rank, root, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from training.detection import DetectionTrainer
    from training.detection_config import DetectionConfig
    cfg = DetectionConfig(train_splits=("2007_trainval",), test_split="2007_test", batch_size=2, lr=0.01,
                          iterations=1, min_size=64, max_size=96, roi_size=7, rois_per_image=8,
                          rpn_proposals_train=32, rpn_proposals_test=16, num_workers=0)
    trainer = DetectionTrainer(cfg, arch="resnet18-B", dataset="voc2007", dataset_path=root, seed=0, rank=rank,
                               world_size=2, wrap_model=torch.nn.parallel.DistributedDataParallel)
    while not trainer.done:
        metrics = trainer.run_epoch()
    torch.save({"metrics": metrics, "params": dict(trainer.net.named_parameters())}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()

if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(work, args=(sys.argv[1], sys.argv[2], port), nprocs=2)
'''


def test_two_ddp_workers_step_together_and_rank_0_scores_every_test_image(voc_root, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(script), str(voc_root), str(tmp_path)], cwd=root, timeout=300,
                          capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert first["metrics"]["iteration"] == second["metrics"]["iteration"] == 1  # one image per rank and step
    assert first["metrics"]["test_images"] == 4 and "test_images" not in second["metrics"]
    assert first["metrics"]["train_loss"] == second["metrics"]["train_loss"]  # all-reduced
    for key, value in first["params"].items():  # (BN statistics are each rank's own; rank 0's are checkpointed)
        assert torch.equal(value, second["params"][key]), key
