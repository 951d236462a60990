"""Demo DeFeat student as a LazyConfig: the Python twin of configs/demo/defeat_slimR18_from_R18.yaml.

The slim R18 student of demo_student_slimR18.py, distilled from the demo R18 teacher (a YAML
config: a LazyConfig teacher works the same way). Train the teacher first (``make demo`` does).
"""

from detectron2.config import LazyCall as L

from defeat import DeFeatRCNN, build_teacher
from defeat.config.settings import default_settings

from .demo_student_slimR18 import dataloader, lr_multiplier, model, optimizer, train

model._target_ = DeFeatRCNN
model.teacher = L(build_teacher)(
    config_file="configs/demo/teacher_R18.yaml",  # or a LazyConfig .py file
    weights="./output/demo/runs/teacher/model_final.pth",
    device="${train.device}",
)
model.defeat = default_settings()  # MODEL.DEFEAT.* in lowercase: model.defeat.neck.bg_weight=...
# Demo boxes are 6-120 px on 128 px images: scale the level rule down so that boxes spread over
# P2-P5 as COCO boxes do at the default 56 on 800 px images.
model.defeat.neck.scale_base = 8.0
model.defeat.max_iter = "${train.max_iter}"  # end of the linear/cosine KD schedules

train.output_dir = "./output/lazy/demo_defeat_slimR18_from_R18"
