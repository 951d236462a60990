"""LazyConfig twin of tiny_defeat.yaml (teacher: tiny_teacher.py); tests set model.teacher.weights."""

from detectron2.config import LazyCall as L

from defeat import DeFeatRCNN, build_teacher
from defeat.config.settings import default_settings

from .tiny_base import dataloader, lr_multiplier, model, optimizer, train

model._target_ = DeFeatRCNN
model.teacher = L(build_teacher)(config_file="tests/configs/tiny_teacher.py", weights="", device="${train.device}")
model.defeat = default_settings()
model.defeat.neck.scale_base = 8.0
model.defeat.head.enabled = True  # off by default; the tests cover it
model.defeat.max_iter = "${train.max_iter}"
