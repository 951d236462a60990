#!/usr/bin/env python
"""Cascade head loss: how much the teacher's stages disagree, and where the KD gradient goes.

    python benchmarks/cascade_stages.py --defeat-config CFG.yaml --teacher-weights T.pth [--batches 8]

On the teacher's sampled RoIs of a few training batches (CFG: a DeFeat Cascade student config):
- ``stage_kl``: mean KL(teacher stage k || teacher last stage) per RoI group: how different the
  targets are that distilling only the last stage would leave out;
- ``student_kl``: mean KL(teacher stage k || student stage k) at the student's initialisation;
- gradient norms of the head loss (obj + bg terms, unweighted) averaged over stages vs. on the
  last stage only, on each stage's ``cls_score`` weights and on the student's FPN maps.
Prints a Markdown table and writes ``--json``.
"""

import argparse
import json
import sys

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() in main (defeat/__init__.py)


def _kl(t, s):
    """Row-wise KL(softmax t || softmax s)."""
    return (t.softmax(1) * (t.log_softmax(1) - s.log_softmax(1))).sum(1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--defeat-config", required=True)
    p.add_argument("--teacher-weights", required=True)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--json", default=None)
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = p.parse_args(argv)

    from defeat.engine.quiet import load_defeat

    load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

    # isort: split
    import torch
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from defeat.data.datasets import register_provided_datasets
    from defeat.demo.experiments import load_config
    from defeat.modeling.meta_arch.box_heads import stage_logits

    cfg = load_config(
        args.defeat_config,
        ["MODEL.DEFEAT.TEACHER.WEIGHTS", args.teacher_weights, "DATALOADER.NUM_WORKERS", "0", *args.opts],
    )
    register_provided_datasets(cfg.DATASETS.TRAIN)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    loader = iter(build_detection_train_loader(cfg))
    stages = len(model.roi_heads.box_predictor)
    acc = {
        "stage_kl": [[0.0, 0.0] for _ in range(stages)],
        "student_kl": [[0.0, 0.0] for _ in range(stages)],
        "grad_cls_mean": [0.0] * stages,
        "grad_cls_last": [0.0] * stages,
        "grad_fpn_mean": 0.0,
        "grad_fpn_last": 0.0,
    }
    with EventStorage(0):
        for _ in range(args.batches):
            batch = next(loader)
            images = model.preprocess_image(batch)
            gt = [x["instances"] for x in batch]
            feats = model.backbone(images.tensor)
            teacher = model.defeat_teacher(batch, images, gt)
            boxes = [r.proposal_boxes for r in teacher["rois"]]
            labels = torch.cat([r.gt_classes for r in teacher["rois"]])
            obj = labels < model.roi_heads.num_classes
            t_logits, s_logits = teacher["logits"], stage_logits(model.roi_heads, feats, boxes)
            per_stage = []
            for k in range(stages):
                for i, group in enumerate((obj, ~obj)):
                    acc["stage_kl"][k][i] += _kl(t_logits[k], t_logits[-1])[group].mean().item() / args.batches
                    acc["student_kl"][k][i] += _kl(t_logits[k], s_logits[k])[group].mean().item() / args.batches
                kl = _kl(t_logits[k], s_logits[k])
                per_stage.append(kl[obj].mean() + kl[~obj].mean())
            levels = [feats[f] for f in model.roi_heads.box_in_features]
            weights = [model.roi_heads.box_predictor[k].cls_score.weight for k in range(stages)]
            for name, loss in (("mean", sum(per_stage) / stages), ("last", per_stage[-1])):
                grads = torch.autograd.grad(loss, weights + levels, retain_graph=True, allow_unused=True)
                for k in range(stages):
                    g = grads[k]
                    acc[f"grad_cls_{name}"][k] += (0.0 if g is None else g.norm().item()) / args.batches
                acc[f"grad_fpn_{name}"] += torch.stack([g.norm() for g in grads[stages:]]).norm().item() / args.batches

    lines = [
        "| stage | KL(t_k, t_last) obj / bg | KL(t_k, s_k) obj / bg | grad cls_score: mean / last-only |",
        "|---|---|---|---|",
    ]
    for k in range(stages):
        lines.append(
            f"| {k} | {acc['stage_kl'][k][0]:.3f} / {acc['stage_kl'][k][1]:.3f} | "
            f"{acc['student_kl'][k][0]:.3f} / {acc['student_kl'][k][1]:.3f} | "
            f"{acc['grad_cls_mean'][k]:.4f} / {acc['grad_cls_last'][k]:.4f} |"
        )
    lines.append(
        f"\nFPN-map gradient norm: mean over stages {acc['grad_fpn_mean']:.3e}, last stage only "
        f"{acc['grad_fpn_last']:.3e}"
    )
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(acc, f, indent=2)
    return acc


if __name__ == "__main__":
    from defeat.engine.entry import run_entry_point

    run_entry_point(main, script="cascade_stages.py")
    sys.exit(0)
