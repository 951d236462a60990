#!/usr/bin/env python
"""Step-time and memory benchmark of DeFeat against its floor, measured side by side.

    python benchmarks/step_time.py                      # CPU-sized demo models
    python benchmarks/step_time.py --preset coco --device cuda [--amp]
    python benchmarks/step_time.py --head off --opts MODEL.DEFEAT.NECK.ADAPTER conv1x1
    python benchmarks/step_time.py --precisions fp32 bf16 --heads teacher student off --boxes 10
    python benchmarks/step_time.py --precisions bf16 --heads off teacher teacher:16 teacher+box student+box

With ``--precisions``, one interleaved run times the student's step and the DeFeat step of each
head mode in each precision (the first given is the reference), so that one command shows where
a step's time goes; ``--boxes`` then takes its first value. A head mode there is
``teacher``/``student`` (the head loss on those RoIs) or ``off`` (neck only), optionally with
``+box`` (the box loss too) and/or ``+cross`` (the cross-head loss too) and, on the teacher's
RoIs, ``:N`` (``HEAD.ROIS_PER_IMAGE N``), e.g. ``teacher+box:16``, ``off+box`` or ``off+cross``.
Otherwise:

On the same batches, after warm-up, the median over ``--steps`` of:
  (a) the student's plain training step (forward + backward),
  (b) the teacher's no-grad work that DeFeat needs (backbone, then per ``--head``: RPN, RoI
      sampling and box head on its RoIs; box head on the student's RoIs; nothing),
  (c) the DeFeat training step (neck + head per ``--head``; ``off`` = neck only),
  (d) the adapters, GT masks and KD losses alone (forward + backward on fixed features),
  (e) the GT masks and KD losses without the adapters,
at each ``--boxes`` count per image. The five are run round-robin (one of each per step, order
rotated) so that machine drift hits them alike. Prints ``c/(a+b)``, ``c/(a+b+adapters)`` (the
floor counting the default conv adapters, ``d - e``, as the method's own cost like the teacher),
``d/c``, ``e/c`` and the peak memory of (a), (b) and (c), and writes JSON (``--json``).
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.analysis.cli import ToolArgumentParser, add_overwrite_argument, at_least, distinct
from defeat.engine.entry import run_entry_point
from defeat.engine.outputs import check_output_files
from defeat.engine.quiet import load_defeat
from defeat.errors import OutputError

HEAD_MODE = re.compile(r"^(teacher|student|off)((?:\+box|\+cross)*)(?::(\d+))?$")


def head_mode(spec: str):
    """``(head loss on, RoI source, box loss on, cross-head loss on, teacher RoIs per image or 0)``
    of a ``--heads`` mode (module docstring); argparse type."""
    m = HEAD_MODE.match(spec)
    extras = m.group(2).split("+")[1:] if m else []
    if not m or len(set(extras)) < len(extras) or (m.group(3) and (m.group(1) == "student" or int(m.group(3)) < 1)):
        raise argparse.ArgumentTypeError(
            f"{spec!r} is not a head mode: teacher, student or off, then optionally +box and/or +cross, then "
            "optionally :N (N >= 1 teacher RoIs per image; not with student), e.g. teacher+box:16"
        )
    head = m.group(1)
    source = "student" if head == "student" else "teacher"
    return head != "off", source, "box" in extras, "cross" in extras, int(m.group(3) or 0)


PRESETS = {
    # student config, DeFeat config overrides, teacher config, image size
    "demo": (
        "configs/demo/student_slimR18.yaml",
        "configs/demo/defeat_slimR18_from_R18.yaml",
        "configs/demo/teacher_R18.yaml",
        128,
        8,
    ),
    "coco": (
        "configs/COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
        "configs/COCO-Detection/defeat_R50_FPN_1x_from_R101_FPN_3x.yaml",
        "model_zoo:COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
        (800, 1333),
        2,
    ),
    "tiny": (
        "tests/configs/tiny_base.yaml",
        "tests/configs/tiny_defeat.yaml",
        "tests/configs/tiny_teacher.yaml",
        64,
        2,
    ),
}


PRECISION_NAMES = ("fp32", "bf16", "fp16")  # --precisions


def _head_mode_arg(spec: str) -> str:
    head_mode(spec)  # raises ArgumentTypeError with the accepted forms
    return spec


def parse_args(argv=None):
    p = ToolArgumentParser(prog="step_time.py", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=list(PRESETS), default="demo")
    p.add_argument("--boxes", type=at_least(1), nargs="+", default=[10, 100, 500])
    p.add_argument("--steps", type=at_least(1), default=15)
    p.add_argument("--warmup", type=at_least(0), default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=at_least(1), default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--amp", action="store_true", help="the whole run under autocast (bf16 on a CPU, fp16 on CUDA)")
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISION_NAMES,
        default=None,
        help="side by side in one run with --heads (e.g. fp32 bf16): the student's and DeFeat's steps "
        "per precision and head mode, interleaved (the first is the reference)",
    )
    p.add_argument(
        "--heads",
        nargs="+",
        type=_head_mode_arg,
        default=["teacher", "student", "off"],
        help="head modes compared with --precisions: teacher, student or off, optionally +box and "
        "(teacher RoIs) :N per image, e.g. teacher+box:16",
    )
    p.add_argument("--teacher-weights", default=None, help="default: random weights of the teacher config")
    p.add_argument(
        "--head",
        choices=["teacher", "student", "off"],
        default="teacher",
        help="head loss of the DeFeat step: on teacher RoIs, on student RoIs, or off (neck only)",
    )
    p.add_argument("--json", default="output/bench_speed/step_time.json")
    p.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="overrides of the DeFeat model, e.g. MODEL.DEFEAT.NECK.ADAPTER conv1x1",
    )
    add_overwrite_argument(p)
    args = p.parse_args(argv)
    if args.precisions:
        distinct(p, "--precisions", args.precisions)
    distinct(p, "--heads", args.heads)
    distinct(p, "--boxes", args.boxes)
    if not args.json.endswith(".json") or os.path.isdir(args.json):
        p.error(f"--json {args.json!r} must be a file path ending in .json")
    try:
        check_output_files([args.json], {}, args.overwrite, "--json")
    except OutputError as e:
        p.error(str(e))
    if args.amp and args.precisions:
        p.error("--amp and --precisions both choose the precision; --precisions fp32 bf16 compares them")
    return args


if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_args, script="step_time.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
import torch


def _cfg(path, opts):
    from defeat.demo.experiments import load_config

    return load_config(path, opts)


def _batch(n, size, boxes, num_classes, seed):
    from detectron2.structures import Boxes, Instances

    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        xy = torch.rand(boxes, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = (torch.rand(boxes, 2, generator=g) * 0.3 + 0.02) * torch.tensor([w, h])
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w, h]))], 1))
        inst.gt_classes = torch.randint(0, num_classes, (boxes,), generator=g)
        out.append({"image": torch.rand(3, h, w, generator=g) * 255, "instances": inst, "height": h, "width": w})
    return out


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device):
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (VmHWM)
    except OSError:
        pass
    return _rss("VmRSS")


def _rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def _peak(device, base):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() - base
    return _rss("VmHWM") - base


def _time_interleaved(fns, steps, warmup, device):
    """Median seconds of each of ``fns`` (name -> callable), run round-robin.

    Every step runs each function once, in an order rotated from step to step, so that drift
    (other processes, thermal state, allocator growth) hits all columns alike.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for i in range(steps):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            _sync(device)
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _graph_bytes(forward):
    """Bytes of the distinct storages autograd saves for backward during ``forward()``: the
    activation memory a training step holds at its peak, exact and independent of allocators."""
    storages = {}

    def pack(t):
        st = t.untyped_storage()
        storages[(st.device, st.data_ptr())] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(storages.values())


def _what_ran(model, defeat_step):
    """What one DeFeat step (c) computed, to tell the head modes apart in the results: its loss
    keys, how often the teacher's RPN ran, and how many RoIs the student's box head read."""
    seen = {"teacher_rpn": 0, "student_box_head_rois": 0}

    def count_rpn(*_):
        seen["teacher_rpn"] += 1

    def count_rois(module, inputs):
        seen["student_box_head_rois"] += int(inputs[0].shape[0])

    handles = [
        model.teacher.proposal_generator.register_forward_hook(count_rpn),
        model.roi_heads.box_head.register_forward_pre_hook(count_rois),
    ]
    try:
        keys = sorted(defeat_step())
    finally:
        for h in handles:
            h.remove()
    return {
        "c_loss_keys": keys,
        "c_teacher_rpn_calls": seen["teacher_rpn"],
        "c_student_box_head_rois": seen["student_box_head_rois"],
    }


def _tensor_bytes(obj):
    """Total bytes of the tensors in nested dicts/lists/tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _peak_of(fn, device):
    """Peak memory (bytes above the level before) of one call of ``fn``."""
    base = _reset_peak(device)
    fn()
    return _peak(device, base)


def _models(preset, device, teacher_weights, heads, opts=()):
    """``(student, {head mode: DeFeat model})`` of a preset in training mode, all with the same
    student weights (seed 0) and teacher (random weights of the teacher config unless given)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    import defeat  # noqa: F401

    student_cfg, defeat_cfg, teacher_cfg, size, n = PRESETS[preset]
    dev = ["MODEL.DEVICE", device]
    if teacher_weights is None:  # random teacher weights: timing does not depend on their values
        tcfg = _cfg(teacher_cfg if not teacher_cfg.startswith("model_zoo:") else _zoo(teacher_cfg), dev)
        tcfg.MODEL.WEIGHTS = ""
        teacher = build_model(tcfg)
        path = os.path.join("output", "bench_speed", f"teacher_{preset}")
        os.makedirs(path, exist_ok=True)
        DetectionCheckpointer(teacher, path).save("random")
        teacher_weights = os.path.join(path, "random.pth")
        del teacher
    torch.manual_seed(0)
    student = build_model(_cfg(student_cfg, dev + ["MODEL.WEIGHTS", ""])).train()
    models = {}
    for head in heads:
        models[head] = _defeat_model(defeat_cfg, dev, teacher_cfg, teacher_weights, head, opts, student)
    return student, models


def _defeat_model(defeat_cfg, dev, teacher_cfg, teacher_weights, head, opts, student):
    from detectron2.modeling import build_model

    head_on, proposals, box, cross, rois = head_mode(head)
    model = build_model(
        _cfg(
            defeat_cfg,
            dev
            + [
                "MODEL.WEIGHTS",
                "",
                "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
                teacher_cfg,
                "MODEL.DEFEAT.TEACHER.WEIGHTS",
                teacher_weights,
                "MODEL.DEFEAT.NECK.ENABLED",
                "True",
                "MODEL.DEFEAT.HEAD.ENABLED",
                str(head_on),
                "MODEL.DEFEAT.HEAD.PROPOSALS",
                proposals,
                "MODEL.DEFEAT.BOX.ENABLED",
                str(box),
                "MODEL.DEFEAT.CROSS_HEAD.ENABLED",
                str(cross),
                "MODEL.DEFEAT.HEAD.ROIS_PER_IMAGE",
                str(rois),
                *opts,
            ],
        )
    ).train()
    model.load_state_dict(student.state_dict(), strict=False)
    return model


def run(preset, boxes_list, steps, warmup, device, amp, teacher_weights=None, head="teacher", opts=()):
    """``head``: the head loss of (c) on the teacher's RoIs (``teacher``), on the student's
    (``student``: no extra student box-head work, the teacher's box head runs on the student's
    RoIs and the teacher's RPN is skipped) or ``off`` (neck only, the package default)."""
    from detectron2.utils.events import EventStorage

    import defeat  # noqa: F401
    from defeat.modeling.losses import decoupled_feature_loss
    from defeat.modeling.meta_arch.rcnn import box_head_logits

    student_cfg, defeat_cfg, teacher_cfg, size, n = PRESETS[preset]
    student, models = _models(preset, device, teacher_weights, [head], opts)
    model = models[head]
    autocast = torch.autocast(device.split(":")[0], enabled=amp)

    def step(m, batch):
        with autocast:
            losses = m(batch)
        sum(losses.values()).backward()
        m.zero_grad(set_to_none=True)
        return losses

    results = {
        "preset": preset,
        "device": device,
        "amp": amp,
        "steps": steps,
        "head": head,
        "opts": list(opts),
        "per_boxes": {},
    }
    with EventStorage(0):
        for boxes in boxes_list:
            batch = _batch(n, size, boxes, model.roi_heads.num_classes, seed=boxes)

            with torch.no_grad():  # RoIs of the same count as the student samples (student mode)
                images = model.preprocess_image(batch)
                gt = [x["instances"].to(model.device) for x in batch]
                fixed_rois = model.teacher_rois(images, model.teacher.backbone(images.tensor), gt)

            def teacher_work():  # the student's preprocessed batch is given, as in (c)
                with torch.no_grad(), autocast:
                    t_images = model.teacher_images(batch, images)
                    feats = model.teacher.backbone(t_images.tensor)
                    if head == "off":
                        return feats
                    rois = model.teacher_rois(t_images, feats, gt) if head == "teacher" else fixed_rois
                    return feats, box_head_logits(model.teacher.roi_heads, feats, [r.proposal_boxes for r in rois])

            with torch.no_grad():
                s_feats = model.backbone(images.tensor)
                t_feats = model.teacher.backbone(images.tensor)
            leaf = {k: v.detach().float().requires_grad_(True) for k, v in s_feats.items()}
            r = sum(len(x) for x in fixed_rois)  # RoIs the head loss sees per step
            logits = torch.randn(r, model.roi_heads.num_classes + 1, device=model.device, requires_grad=True)
            t_logits = torch.randn_like(logits)
            is_obj = torch.rand(r, device=model.device) < 0.25

            def kd_only():
                d = model.distiller
                losses = d.neck_losses(leaf, t_feats, [g.gt_boxes.tensor for g in gt])
                if head != "off":
                    losses.update(d.head_losses(logits, t_logits, is_obj))
                sum(losses.values()).backward()

            # The same without the adapters: features already of the teacher's width (e = masks +
            # losses only; d - e is the adapters' forward and backward).
            names = model.distiller.in_features
            adapted = {f: (t_feats[f] + 0.1).requires_grad_(True) for f in names}

            def masks_and_losses():
                d = model.distiller
                masks = d.masks([g.gt_boxes.tensor for g in gt], adapted)
                obj, bg = decoupled_feature_loss([adapted[f] for f in names], [t_feats[f] for f in names], masks)
                total = obj + bg
                if head != "off":
                    total = total + sum(d.head_losses(logits, t_logits, is_obj).values())
                total.backward()

            fns = {
                "a": lambda: step(student, batch),
                "b": teacher_work,
                "c": lambda: step(model, batch),
                "d": kd_only,
                "e": masks_and_losses,
            }
            t = _time_interleaved(fns, steps, warmup, device)
            ran = _what_ran(model, lambda: step(model, batch))
            row = {
                "a_student_step_s": t["a"],
                "b_teacher_forward_s": t["b"],
                "c_defeat_step_s": t["c"],
                "d_masks_and_losses_s": t["d"],
                "e_without_adapters_s": t["e"],
                "a_peak_mem_bytes": _peak_of(fns["a"], device),
                "b_peak_mem_bytes": _peak_of(fns["b"], device),
                "c_peak_mem_bytes": _peak_of(fns["c"], device),
                **ran,
            }
            with autocast:
                row["a_graph_bytes"] = _graph_bytes(lambda: student(batch))
                row["c_graph_bytes"] = _graph_bytes(lambda: model(batch))
            row["b_output_bytes"] = _tensor_bytes(teacher_work())
            row["c_graph_over_a_plus_teacher"] = row["c_graph_bytes"] / (row["a_graph_bytes"] + row["b_output_bytes"])
            # Multiply-accumulates of the adapters' forward per image (backward: twice that).
            row["adapter_gmac_per_image"] = (
                sum(
                    a.weight.numel() * s_feats[f].shape[-2] * s_feats[f].shape[-1]
                    for f, a in model.distiller.adapters.items()
                    if isinstance(a, torch.nn.Conv2d)
                )
                / 1e9
            )
            row["adapters_s"] = max(t["d"] - t["e"], 0.0)
            row["e_over_c"] = row["e_without_adapters_s"] / row["c_defeat_step_s"]
            row["c_over_a_plus_b"] = row["c_defeat_step_s"] / (row["a_student_step_s"] + row["b_teacher_forward_s"])
            row["c_over_floor"] = row["c_defeat_step_s"] / (
                row["a_student_step_s"] + row["b_teacher_forward_s"] + row["adapters_s"]
            )
            row["d_over_c"] = row["d_masks_and_losses_s"] / row["c_defeat_step_s"]
            results["per_boxes"][boxes] = row
            print(
                f"boxes/img {boxes:4d}: a {row['a_student_step_s']:.3f}s  b {row['b_teacher_forward_s']:.3f}s  "
                f"c {row['c_defeat_step_s']:.3f}s  d {row['d_masks_and_losses_s'] * 1e3:.1f}ms  "
                f"c/(a+b) {row['c_over_a_plus_b']:.3f}  c/(a+b+adapters) {row['c_over_floor']:.3f}  "
                f"d/c {row['d_over_c']:.4f}  e/c {row['e_over_c']:.4f}  "
                f"adapters {row['adapter_gmac_per_image']:.3f} GMAC/img  "
                f"peak a {row['a_peak_mem_bytes'] / 2**20:.0f} b {row['b_peak_mem_bytes'] / 2**20:.0f} "
                f"c {row['c_peak_mem_bytes'] / 2**20:.0f} MiB  autograd-saved a {row['a_graph_bytes'] / 2**20:.1f} "
                f"c {row['c_graph_bytes'] / 2**20:.1f} MiB, teacher outputs {row['b_output_bytes'] / 2**20:.1f} MiB: "
                f"c/(a+teacher) {row['c_graph_over_a_plus_teacher']:.3f}",
                flush=True,
            )
    return results


PRECISIONS = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16)))


def run_matrix(preset, boxes, steps, warmup, device, precisions, heads, teacher_weights=None, opts=()):
    """Where a training step's time goes, in one interleaved run: for each precision (``fp32``,
    or autocast to ``bf16``/``fp16``) the student's step (a) and, for each head mode, the DeFeat
    step (c); with ``c/a`` per combination and each precision's steps against fp32's."""
    from detectron2.utils.events import EventStorage

    _, _, _, size, n = PRESETS[preset]
    student, models = _models(preset, device, teacher_weights, heads, opts)
    kind = device.split(":")[0]
    batch = _batch(n, size, boxes, student.roi_heads.num_classes, seed=boxes)

    def step(m, dtype):
        def go():
            with torch.autocast(kind, dtype=dtype or torch.float32, enabled=dtype is not None):
                losses = m(batch)
            sum(losses.values()).backward()
            m.zero_grad(set_to_none=True)
            return losses

        return go

    fns = {}
    for p in precisions:
        fns[f"a {p}"] = step(student, PRECISIONS[p])
        for h in heads:
            fns[f"c {p} {h}"] = step(models[h], PRECISIONS[p])
    with EventStorage(0):
        t = _time_interleaved(fns, steps, warmup, device)
        ran = {h: _what_ran(models[h], fns[f"c {precisions[0]} {h}"]) for h in heads}
        dtypes = {p: _conv_dtype(student, fns[f"a {p}"]) for p in precisions}
    rows = []
    for p in precisions:
        for h in heads:
            rows.append(
                {
                    "precision": p,
                    "head": h,
                    "conv_dtype": dtypes[p],
                    "a_student_step_s": t[f"a {p}"],
                    "c_defeat_step_s": t[f"c {p} {h}"],
                    "c_over_a": t[f"c {p} {h}"] / t[f"a {p}"],
                    "c_over_fp32_c": t[f"c {p} {h}"] / t[f"c {precisions[0]} {h}"],
                    **ran[h],
                }
            )
            print(
                f"{p:>5} head {h:>14}: a {t[f'a {p}']:.3f}s  c {t[f'c {p} {h}']:.3f}s  c/a {rows[-1]['c_over_a']:.3f}  "
                f"c/c({precisions[0]}) {rows[-1]['c_over_fp32_c']:.3f}  convs in {dtypes[p]}",
                flush=True,
            )
    return {"preset": preset, "device": device, "boxes": boxes, "steps": steps, "opts": list(opts), "rows": rows}


def _conv_dtype(model, forward_step) -> str:
    """The dtype the student's first convolution computes in during ``forward_step()``."""
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(str(o.dtype).replace("torch.", "")))
    try:
        forward_step()
    finally:
        handle.remove()
    return seen[0]


def _zoo(name):
    from detectron2 import model_zoo

    return model_zoo.get_config_file(name[len("model_zoo:") :])


def main(argv=None):
    """``argv``: the command line, or its parsed arguments (:func:`parse_args`)."""
    args = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)
    from defeat.engine.machine import device_problem  # torch: after the light parse

    problem = device_problem(args.device)
    if problem:  # an argument error, as the parser's (one line, status 2)
        print(f"step_time.py: error: --device {args.device!r}, {problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precisions:
        res = run_matrix(
            args.preset,
            args.boxes[0],
            args.steps,
            args.warmup,
            args.device,
            args.precisions,
            list(dict.fromkeys(args.heads)),
            args.teacher_weights,
            args.opts,
        )
        res["torch"], res["threads"] = torch.__version__, torch.get_num_threads()
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")
        return res
    res = run(
        args.preset,
        args.boxes,
        args.steps,
        args.warmup,
        args.device,
        args.amp,
        args.teacher_weights,
        args.head,
        args.opts,
    )
    res["torch"] = torch.__version__
    res["threads"] = torch.get_num_threads()
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {args.json}")
    return res


if __name__ == "__main__":
    run_entry_point(main, ARGS, script="step_time.py")
    sys.exit(0)
