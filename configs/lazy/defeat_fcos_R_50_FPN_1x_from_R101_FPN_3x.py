"""COCO recipe: Detectron2's FCOS R50-FPN 1x distilled with DeFeat from an FCOS R101-FPN 3x teacher.

Same data, schedule and optimiser as ``COCO-Detection/fcos_R_50_FPN_1x.py`` (its checkpoints
evaluate with that plain config). Train the teacher first (fcos_R_101_FPN_3x.py: the model zoo
has no FCOS R101 weights), then, with COCO and GPUs:

    python lazy_train_net.py --config-file configs/lazy/defeat_fcos_R_50_FPN_1x_from_R101_FPN_3x.py --num-gpus 8
"""

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from defeat import DeFeatFCOS, build_teacher
from defeat.config.settings import default_settings

_student = get_config("COCO-Detection/fcos_R_50_FPN_1x.py")
dataloader = _student.dataloader
lr_multiplier = _student.lr_multiplier
model = _student.model
optimizer = _student.optimizer
train = _student.train

model._target_ = DeFeatFCOS
model.teacher = L(build_teacher)(
    config_file="configs/lazy/fcos_R_101_FPN_3x.py",
    weights="./output/lazy/fcos_R_101_FPN_3x/model_final.pth",
    device="${train.device}",
)
model.defeat = default_settings()
model.defeat.neck.in_features = ["p3", "p4", "p5", "p6", "p7"]  # FCOS's levels
model.defeat.neck.obj_weight = 4.0  # the paper's COCO weights (package defaults 1/4, benchmarks/RESULTS.md)
model.defeat.neck.bg_weight = 16.0
model.defeat.head.enabled = False  # as the RetinaNet recipe; if enabled, keep weights near 0.25/1
model.defeat.warmup_iters = 500
model.defeat.max_iter = "${train.max_iter}"

train.output_dir = "./output/lazy/defeat_fcos_R_50_FPN_1x_from_R101_FPN_3x"
