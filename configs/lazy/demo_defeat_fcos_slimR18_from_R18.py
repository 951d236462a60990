"""Demo DeFeat FCOS student: the slim R18 FCOS of demo_fcos_student_slimR18.py distilled from the
demo R18 FCOS teacher (train it first: ``python lazy_train_net.py --config-file
configs/lazy/demo_fcos_teacher_R18.py``). Neck loss on P3-P7, per-location sigmoid head KL
(objects: the locations FCOS assigns to a GT box)."""

from detectron2.config import LazyCall as L

from defeat import DeFeatFCOS, build_teacher
from defeat.config.settings import default_settings

from .demo_fcos_student_slimR18 import dataloader, lr_multiplier, model, optimizer, train

model._target_ = DeFeatFCOS
model.teacher = L(build_teacher)(
    config_file="configs/lazy/demo_fcos_teacher_R18.py",
    weights="./output/lazy/demo_fcos_teacher_R18/model_final.pth",
    device="${train.device}",
)
model.defeat = default_settings()
model.defeat.neck.in_features = ["p3", "p4", "p5", "p6", "p7"]
model.defeat.neck.scale_base = 12.0  # as the demo RetinaNet: 12-24 px boxes on P3
model.defeat.head.enabled = True  # per-location sigmoid KL at the package's 0.25/1
model.defeat.warmup_iters = 100
model.defeat.max_iter = "${train.max_iter}"

train.output_dir = "./output/lazy/demo_defeat_fcos_slimR18_from_R18"
