#!/usr/bin/env python
"""DeFeat in your own meta-architecture: a GeneralizedRCNN subclass with its own forward.

    python examples/custom_rcnn.py --config-file configs/demo/defeat_slimR18_from_R18.yaml \
        MODEL.META_ARCHITECTURE CustomDeFeatRCNN

Importing this module registers ``CustomDeFeatRCNN``; run as a script it trains it with
``train_net.py``'s trainer (same arguments). See docs/extending.md.
"""

import os
import sys
import warnings

with warnings.catch_warnings(record=True) as _early:  # the pinned stack's import-time warnings
    import defeat  # noqa: F401  (registers the models)
    from defeat.engine.quiet import quiet_logs
quiet_logs(_early)  # hides the pinned stack's known-harmless messages (defeat.engine.quiet)

# isort: split
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage

from defeat import DeFeatMixin


# --- docs/extending.md: begin ---
@META_ARCH_REGISTRY.register()
class CustomDeFeatRCNN(DeFeatMixin, GeneralizedRCNN):
    """Your architecture: DeFeatMixin first, then your Detectron2 parent class."""

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)  # inference never touches the teacher
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        # DeFeat 1/2: the frozen teacher on the same batch (no autograd).
        teacher = self.defeat_teacher(batched_inputs, images, gt_instances)
        sampled, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        losses = {**detector_losses, **proposal_losses}
        # DeFeat 2/2: loss_defeat_{neck,head}_{obj,bg}, weighted and scheduled.
        losses.update(self.defeat_losses(features, gt_instances, teacher, sampled))
        return losses


# --- docs/extending.md: end ---


def main():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from detectron2.engine import default_argument_parser, launch

    import train_net

    args = default_argument_parser().parse_args()
    launch(
        train_net.main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    from defeat.engine.entry import run_entry_point

    run_entry_point(main, script="custom_rcnn.py")
