"""Each COCO DeFeat recipe has a plain student config that builds the same student (for the
baseline and for evaluating DeFeat checkpoints with --eval-only)."""
import pytest

from conftest import make_cfg

PAIRS = [
    ("COCO-Detection/defeat_R50_FPN_1x_from_R101_FPN_3x.yaml", "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"),
    ("COCO-Detection/defeat_R18_FPN_1x_from_R50_FPN_3x.yaml", "COCO-Detection/faster_rcnn_R_18_FPN_1x.yaml"),
    ("COCO-Detection/defeat_retinanet_R50_FPN_1x_from_R101_FPN_3x.yaml", "COCO-Detection/retinanet_R_50_FPN_1x.yaml"),
    ("COCO-Detection/defeat_retinanet_R50_FPN_1x_from_faster_rcnn_R101_FPN_3x.yaml",
     "COCO-Detection/retinanet_R_50_FPN_1x.yaml"),
    ("COCO-InstanceSegmentation/defeat_mask_rcnn_R_50_FPN_1x_from_R101_FPN_3x.yaml",
     "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"),
]


@pytest.mark.parametrize("defeat_file,plain_file", PAIRS)
def test_plain_config_describes_the_same_student(defeat_file, plain_file):
    defeat = make_cfg(f"configs/{defeat_file}")
    plain = make_cfg(f"configs/{plain_file}")
    assert defeat.MODEL.META_ARCHITECTURE == "DeFeat" + plain.MODEL.META_ARCHITECTURE.replace("GeneralizedRCNN", "RCNN")
    for cfg in (defeat, plain):
        cfg.MODEL.META_ARCHITECTURE = cfg.MODEL.DEFEAT = cfg.OUTPUT_DIR = None
    assert defeat.MODEL == plain.MODEL
    assert defeat.INPUT == plain.INPUT and defeat.DATASETS == plain.DATASETS and defeat.SOLVER == plain.SOLVER
