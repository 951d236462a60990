"""COCO recipe: Detectron2's new-baseline Mask R-CNN R50-FPN (100 epochs, LSJ, from scratch)
distilled with DeFeat from the model-zoo new-baseline R101-FPN (100 epochs).

Same data, schedule and optimiser as ``new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py``; the
student's checkpoints evaluate with that plain config. Needs COCO and GPUs:

    python lazy_train_net.py --config-file configs/lazy/defeat_mask_rcnn_R_50_FPN_100ep_LSJ_from_R101.py --num-gpus 8
"""

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from defeat import DeFeatRCNN, build_teacher
from defeat.config.settings import default_settings

_student = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
dataloader = _student.dataloader
lr_multiplier = _student.lr_multiplier
model = _student.model
optimizer = _student.optimizer
train = _student.train

model._target_ = DeFeatRCNN
model.teacher = L(build_teacher)(
    config_file="model_zoo:new_baselines/mask_rcnn_R_101_FPN_100ep_LSJ.py",
    weights="detectron2://new_baselines/mask_rcnn_R_101_FPN_100ep_LSJ/42025812/model_final_4f7b58.pkl",
    device="${train.device}",
)
model.defeat = default_settings()
model.defeat.neck.obj_weight = 4.0  # the paper's COCO weights (package defaults 1/4, benchmarks/RESULTS.md)
model.defeat.neck.bg_weight = 16.0
model.defeat.head.enabled = False  # as in the original COCO release; if enabled, keep weights near 0.25/1
model.defeat.warmup_iters = 500
model.defeat.max_iter = "${train.max_iter}"

train.output_dir = "./output/lazy/defeat_mask_rcnn_R_50_FPN_100ep_LSJ_from_R101"
