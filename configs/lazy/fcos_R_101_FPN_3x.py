"""FCOS R101-FPN, 3x: the teacher of defeat_fcos_R_50_FPN_1x_from_R101_FPN_3x.py.

Detectron2's model zoo has no trained FCOS R101, so train this first (COCO, 8 GPUs):

    python lazy_train_net.py --config-file configs/lazy/fcos_R_101_FPN_3x.py --num-gpus 8
"""

from detectron2.model_zoo import get_config

_base = get_config("COCO-Detection/fcos_R_50_FPN_1x.py")
dataloader = _base.dataloader
model = _base.model
optimizer = _base.optimizer
train = _base.train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.max_iter = 270000  # 3x
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_3x
train.output_dir = "./output/lazy/fcos_R_101_FPN_3x"
