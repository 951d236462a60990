"""Tiny DeFeat FCOS student of tiny_fcos_teacher.py; tests set model.teacher.weights."""

from detectron2.config import LazyCall as L

from defeat import DeFeatFCOS, build_teacher
from defeat.config.settings import default_settings

from .tiny_fcos_base import dataloader, lr_multiplier, model, optimizer, train

model._target_ = DeFeatFCOS
model.teacher = L(build_teacher)(config_file="tests/configs/tiny_fcos_teacher.py", weights="", device="${train.device}")
model.defeat = default_settings()
model.defeat.neck.in_features = ["p3", "p4", "p5", "p6", "p7"]
model.defeat.neck.scale_base = 12.0
model.defeat.head.enabled = True
model.defeat.max_iter = "${train.max_iter}"
