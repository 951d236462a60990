"""``add_defeat_config``: the one place the defaults of DeFeat's Detectron2 config keys live
(docs/config_reference.md)."""

from detectron2.config import CfgNode as CN

__all__ = ["add_defeat_config"]


def add_defeat_config(cfg):
    """Add ``MODEL.DEFEAT`` with its defaults to a Detectron2 config (in place)."""
    cfg.MODEL.DEFEAT = CN()
    cfg.MODEL.DEFEAT.TEACHER = CN()
    # Any Detectron2 YAML config (``_BASE_`` chains allowed) and its weights.
    cfg.MODEL.DEFEAT.TEACHER.CONFIG_FILE = ""
    cfg.MODEL.DEFEAT.TEACHER.WEIGHTS = ""
    # The teacher sees the batch resized by this factor (e.g. 800/512 for a teacher trained at
    # 800 px and a student at 512 px); its maps are resampled to the student's grids. Costs the
    # teacher ~INPUT_SCALE^2 its FLOPs at 1.0 (docs/config_reference.md).
    cfg.MODEL.DEFEAT.TEACHER.INPUT_SCALE = 1.0

    cfg.MODEL.DEFEAT.NECK = CN()
    cfg.MODEL.DEFEAT.NECK.ENABLED = True
    cfg.MODEL.DEFEAT.NECK.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # Defaults from benchmarks/RESULTS.md (demo data, from-scratch students): 1/4 beat the paper's
    # COCO values 4/16 by +3.6 AP at 300 iterations and +4.9 AP at 600 (4/16 also diverges without
    # gradient clipping there). The COCO recipes in configs/ set the paper's 4/16 explicitly.
    cfg.MODEL.DEFEAT.NECK.OBJ_WEIGHT = 1.0
    cfg.MODEL.DEFEAT.NECK.BG_WEIGHT = 4.0
    cfg.MODEL.DEFEAT.NECK.ADAPTER = "conv3x3"  # "conv3x3", "conv1x1" or "none"
    # Std of the conv adapters' initial weights (normal, truncated at 2 std); the near-zero
    # 1e-4 passes only a tiny share of the KD gradient to the student at first.
    cfg.MODEL.DEFEAT.NECK.ADAPTER_INIT_STD = 1e-4
    # "none", or "channel": student (adapted) and teacher maps standardised per image and channel
    # before the loss (an addition to the paper; benchmarks/RESULTS.md).
    cfg.MODEL.DEFEAT.NECK.FEATURE_NORM = "none"
    # "scale" or "all" (docs/algorithm.md, section 1); "coupled" = no object/background split (ablation baseline).
    cfg.MODEL.DEFEAT.NECK.MASK_ASSIGN = "scale"
    cfg.MODEL.DEFEAT.NECK.SCALE_BASE = 56.0

    cfg.MODEL.DEFEAT.HEAD = CN()
    # Off by default (as in the original COCO release): it added nothing on top of the neck loss
    # in our benchmark. At the paper's 2/2 it hurt: per-group normalisation gives each object
    # RoI ~14x the weight the CE loss gives it (object RoIs are ~15 % of the sampled RoIs), so
    # the KL gradient on the logits was 6x the CE's. 0.25/1 keeps it at or below the CE's.
    cfg.MODEL.DEFEAT.HEAD.ENABLED = False
    cfg.MODEL.DEFEAT.HEAD.PROPOSALS = "teacher"  # "teacher" or "student"
    cfg.MODEL.DEFEAT.HEAD.OBJ_WEIGHT = 0.25
    cfg.MODEL.DEFEAT.HEAD.BG_WEIGHT = 1.0
    cfg.MODEL.DEFEAT.HEAD.TEMPERATURE = 1.0
    # RoIs per image the teacher samples for the head and box losses (PROPOSALS "teacher"), with
    # the teacher's foreground fraction; fewer make the student's extra box-head rows cheaper.
    # 0: the teacher's own MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE.
    cfg.MODEL.DEFEAT.HEAD.ROIS_PER_IMAGE = 0

    # Box distillation (localisation KD, beyond the paper; docs/algorithm.md, section 3): on the
    # head loss's RoIs (HEAD.PROPOSALS, object RoIs) or the dense head's object locations, the
    # student's box for the entry's class pulled towards the teacher's, weighted by the teacher's
    # confidence in that class. Works with HEAD.ENABLED on or off.
    cfg.MODEL.DEFEAT.BOX = CN()
    cfg.MODEL.DEFEAT.BOX.ENABLED = False
    cfg.MODEL.DEFEAT.BOX.WEIGHT = 1.0
    cfg.MODEL.DEFEAT.BOX.LOSS = "l1"  # "l1" (on the student's box deltas) or "giou" (on decoded boxes)

    # Cross-head distillation (beyond the paper, after CrossKD, CVPR 2023): the student's
    # adapted FPN maps (the neck adapters) run through the teacher's frozen box head on the head
    # loss's RoIs, and its classification is matched to the teacher's own (decoupled KL, as the
    # head loss). The gradient reaches the student's features through the teacher's head.
    # Two-stage students only; needs NECK.ENABLED with the teacher's box levels in NECK.IN_FEATURES.
    cfg.MODEL.DEFEAT.CROSS_HEAD = CN()
    cfg.MODEL.DEFEAT.CROSS_HEAD.ENABLED = False
    cfg.MODEL.DEFEAT.CROSS_HEAD.OBJ_WEIGHT = 0.25
    cfg.MODEL.DEFEAT.CROSS_HEAD.BG_WEIGHT = 1.0

    # Module-name prefixes of the student (e.g. "backbone.fpn_", "proposal_generator",
    # "roi_heads.box_head") whose tensors are copied from the teacher's of the same names and
    # shapes at the start of a fresh run (after MODEL.WEIGHTS; never on resume).
    cfg.MODEL.DEFEAT.INHERIT = []

    # "constant", "linear" or "cosine": the last two decay the KD weight to 0 at SOLVER.MAX_ITER.
    cfg.MODEL.DEFEAT.LOSS_SCHEDULE = "constant"
    # The KD weight ramps linearly from 0 to 1 over these many iterations.
    cfg.MODEL.DEFEAT.WARMUP_ITERS = 0
    return cfg
