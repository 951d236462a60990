#!/usr/bin/env python
"""Why can the head KL hurt? Compare its gradient on the box classifier with the CE loss's.

    python benchmarks/head_kl_analysis.py --teacher-weights T.pth --student-weights S.pth [--batches 4]

On real training batches (student RoIs, as in ``HEAD.PROPOSALS student``), reports the loss values,
the share of object RoIs, and the gradient norm w.r.t. the student's classification logits of
``loss_cls`` and of each KL group at several (obj weight, bg weight, temperature) settings.
Per-group normalisation averages the object KL over the few object RoIs, so each object RoI gets
``w_obj / n_obj`` where the CE gives it ``1 / n_all``: the ratio is printed as ``obj upweight``.
"""

import argparse
import sys

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() in main (defeat/__init__.py)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--defeat-config", default="configs/demo/defeat_slimR18_from_R18.yaml")
    p.add_argument("--teacher-weights", default="output/demo/runs/teacher/model_final.pth")
    p.add_argument("--student-weights", default="output/demo/runs/student_alone/model_final.pth")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument(
        "--settings",
        nargs="+",
        default=["2,2,1", "0.25,1,1", "0.5,0.5,1", "2,2,2", "1,1,4"],
        help="obj_weight,bg_weight,temperature triples",
    )
    args = p.parse_args(argv)

    from defeat.engine.quiet import load_defeat

    load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

    # isort: split
    import torch
    import torch.nn.functional as F
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    import defeat
    from defeat.demo.data import register_demo_dataset
    from defeat.demo.experiments import load_config
    from defeat.modeling.meta_arch.rcnn import box_head_logits

    cfg = load_config(
        args.defeat_config, ["MODEL.DEFEAT.TEACHER.WEIGHTS", args.teacher_weights, "DATALOADER.NUM_WORKERS", "0"]
    )
    register_demo_dataset()
    model = build_model(cfg).train()
    DetectionCheckpointer(model).load(args.student_weights)
    loader = iter(build_detection_train_loader(cfg))
    rows = {s: [] for s in args.settings}
    ce_norms, ce_vals, fg_share = [], [], []
    with EventStorage(0):
        for _ in range(args.batches):
            batch = next(loader)
            with torch.no_grad():
                images = model.preprocess_image(batch)
                gt = [x["instances"] for x in batch]
                feats = model.backbone(images.tensor)
                props, _ = model.proposal_generator(images, feats, gt)
                rois = model.roi_heads.label_and_sample_proposals(props, gt)
                t_logits = box_head_logits(
                    model.teacher.roi_heads, model.teacher.backbone(images.tensor), [r.proposal_boxes for r in rois]
                )
                s_logits = box_head_logits(model.roi_heads, feats, [r.proposal_boxes for r in rois])
            labels = torch.cat([r.gt_classes for r in rois])
            is_obj = labels < model.roi_heads.num_classes
            fg_share.append(is_obj.float().mean().item())
            x = s_logits.clone().requires_grad_(True)
            ce = F.cross_entropy(x, labels)
            (g,) = torch.autograd.grad(ce, x)
            ce_vals.append(ce.item())
            ce_norms.append(g.norm().item())
            for s in args.settings:
                wo, wb, t = (float(v) for v in s.split(","))
                x = s_logits.clone().requires_grad_(True)
                obj, bg = defeat.decoupled_kl_loss(x, t_logits, is_obj, t)
                (go,) = torch.autograd.grad(wo * obj, x, retain_graph=True)
                (gb,) = torch.autograd.grad(wb * bg, x)
                rows[s].append((wo * obj.item(), wb * bg.item(), go.norm().item(), gb.norm().item()))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    share = mean(fg_share)
    print(f"object RoI share {share:.3f}; loss_cls {mean(ce_vals):.3f}; |grad loss_cls| {mean(ce_norms):.4f}")
    columns = (
        "obj w, bg w, T",
        "KL obj (weighted)",
        "KL bg (weighted)",
        "|grad obj| / |grad CE|",
        "|grad bg| / |grad CE|",
        "obj upweight",
    )
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|")
    for s, r in rows.items():
        wo = float(s.split(",")[0])
        vals = [mean([x[i] for x in r]) for i in range(4)]
        ce = mean(ce_norms)
        print(f"| {s} | {vals[0]:.3f} | {vals[1]:.3f} | {vals[2] / ce:.2f} | {vals[3] / ce:.2f} | {wo / share:.1f}x |")


if __name__ == "__main__":
    from defeat.engine.entry import run_entry_point

    run_entry_point(main, script="head_kl_analysis.py")
    sys.exit(0)
