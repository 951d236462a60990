#!/usr/bin/env python
"""Mutation check: break each promise of the docs once, on a throwaway copy, and see a test fail.

    .venv/bin/python tests/mutants.py                 # every mutant
    .venv/bin/python tests/mutants.py resume_shapes ddp_no_average   # some of them
    .venv/bin/python tests/mutants.py --list          # the mutants, stale ones marked
    .venv/bin/python tests/mutants.py --check         # only whether every mutant still applies

Not part of ``make test`` (it runs the selected tests once per mutant, about 15 minutes in all).
The copy is ``git worktree add --detach`` of HEAD in a temporary folder (uncommitted changes are
not in it); each mutant replaces one exact piece of source text, runs its tests with the copy's
package first on the path, and is restored. A mutant is *killed* when at least one of its tests
fails. Exit status 1 if any mutant survives.

The list cannot rot silently: :func:`problems` (run before any mutant, by ``--check`` and ``--list``,
and by ``tests/test_mutants_current.py`` in the regular suite) reports a mutant whose file is gone,
whose text does not occur exactly once, whose test files or ``::`` tests are gone, or whose ``-k``
expression names no test of its files; a run whose tests select nothing counts as survived.
"""

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Mutant(NamedTuple):
    name: str
    promise: str
    path: str
    old: object  # the exact source text, or a tuple of texts (each replaced by the same item of new)
    new: object
    tests: Tuple[str, ...]  # pytest arguments (files, -k expressions)


_NO_AVERAGE = """    import torch

    ddp = create_ddp_model(model, **kwargs)
    if hasattr(ddp, "register_comm_hook"):

        def local(state, bucket):
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        ddp.register_comm_hook(None, local)
    return ddp"""

MUTANTS = [
    Mutant(
        "mask_min_cell",
        "every box marks at least one cell",
        "projects/defeat/modeling/masks.py",
        "rx = torch.maximum(b[:, 2], lx + 1)",
        "rx = b[:, 2]",
        ("tests/modeling/test_masks.py",),
    ),
    Mutant(
        "mask_level_round",
        "level = floor(log2(sqrt(wh) / SCALE_BASE))",
        "projects/defeat/data/box_levels.py",
        "lvl = torch.floor(torch.log2(side / scale_base))",
        "lvl = torch.round(torch.log2(side / scale_base))",
        ("tests/modeling/test_masks.py",),
    ),
    Mutant(
        "neck_normaliser",
        "object term normalised by 2 * C * mask cells",
        "projects/defeat/modeling/losses.py",
        "obj_terms.append((sq * m).sum() / (2.0 * c * m.sum()).clamp(min=1.0))",
        "obj_terms.append((sq * m).sum() / (c * m.sum()).clamp(min=1.0))",
        ("tests/modeling/test_losses.py",),
    ),
    Mutant(
        "neck_teacher_grad",
        "gradients of the neck loss reach the student only",
        "projects/defeat/modeling/losses.py",
        "sq = (s.float() - t.detach().float()).pow(2).sum(dim=1)",
        "sq = (s.float() - t.float()).pow(2).sum(dim=1)",
        ("tests/modeling/test_losses.py",),
    ),
    Mutant(
        "kl_temperature",
        "KL scaled by T^2",
        "projects/defeat/modeling/losses.py",
        "return student_logits.float() / t, teacher_logits.detach().float() / t, t * t",
        "return student_logits.float() / t, teacher_logits.detach().float() / t, t",
        ("tests/modeling/test_losses.py",),
    ),
    Mutant(
        "kl_teacher_grad",
        "teacher logits detached",
        "projects/defeat/modeling/losses.py",
        "return student_logits.float() / t, teacher_logits.detach().float() / t, t * t",
        "return student_logits.float() / t, teacher_logits.float() / t, t * t",
        ("tests/modeling/test_losses.py",),
    ),
    Mutant(
        "teacher_trainable",
        "teacher frozen (requires_grad False)",
        "projects/defeat/modeling/teacher.py",
        "        p.requires_grad_(False)",
        "        p.requires_grad_(True)",
        ("tests/modeling/test_teacher.py", "tests/modeling/test_model.py"),
    ),
    Mutant(
        "teacher_train_mode",
        "teacher always in eval mode",
        "projects/defeat/modeling/meta_arch/common.py",
        """        if "teacher" in self.__dict__:
            self.teacher.eval()""",
        """        if "teacher" in self.__dict__:
            self.teacher.train(mode)""",
        ("tests/modeling/test_teacher.py", "tests/modeling/test_model.py"),
    ),
    Mutant(
        "teacher_not_strict",
        "teacher weights load strictly",
        "projects/defeat/modeling/teacher.py",
        "    if problems:\n        raise TeacherLoadError(",
        "    if False:\n        raise TeacherLoadError(",
        ("tests/modeling/test_teacher.py", "tests/config/test_errors.py"),
    ),
    Mutant(
        "teacher_in_state_dict",
        "checkpoints hold the student only",
        "projects/defeat/modeling/meta_arch/common.py",
        'object.__setattr__(self, "teacher", teacher)',
        "self.teacher = teacher",
        ("tests/modeling/test_model.py", "tests/test_checkpoint.py"),
    ),
    Mutant(
        "resume_shapes_adapters_only",
        "resume into another model refused (every shape, not only the adapters')",
        "projects/defeat/checkpoint.py",
        'if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(v.shape)',
        'if k.startswith("distiller.") and k in theirs and tuple(theirs[k].shape) != tuple(v.shape)',
        ("tests/engine/test_resume.py",),
    ),
    Mutant(
        "resume_keys_adapters_only",
        "resume into a model with other tensors refused (depth, heads)",
        "projects/defeat/checkpoint.py",
        "            kd = sorted(keys)",
        '            kd = sorted(k for k in keys if k.startswith("distiller."))',
        ("tests/engine/test_resume.py",),
    ),
    Mutant(
        "resume_config_not_restored",
        "a refused resume leaves config.yaml as it was",
        "projects/defeat/checkpoint.py",
        "        if old is not None:\n            atomic_write(path, lambda f: f.write(old))",
        "        if False:\n            pass",
        ("tests/engine/test_resume.py",),
    ),
    Mutant(
        "checkpoint_not_atomic",
        "checkpoints written atomically (temporary file, then rename)",
        "projects/defeat/checkpoint.py",
        ("        with open(tmp, mode) as f:", "        os.replace(tmp, path)\n"),
        ("        with open(path, mode) as f:", "\n"),
        ("tests/test_checkpoint.py",),
    ),
    Mutant(
        "ddp_no_average",
        "data-parallel processes average their gradients",
        "projects/defeat/engine/ddp.py",
        "    return create_ddp_model(model, **kwargs)",
        _NO_AVERAGE,
        ("tests/engine/test_multi_machine.py", "tests/engine/test_ddp.py"),
    ),
    Mutant(
        "export_keeps_adapters",
        "the exported student holds no distillation tensors",
        "projects/defeat/analysis/export.py",
        'DISTILLATION_PREFIXES: Tuple[str, ...] = ("distiller.", "teacher.")',
        'DISTILLATION_PREFIXES: Tuple[str, ...] = ("teacher.",)',
        ("tests/analysis/test_export.py",),
    ),
    Mutant(
        "data_classes_unchecked",
        "dataset categories checked against NUM_CLASSES",
        "projects/defeat/data/checks.py",
        "    if len(classes) != num_classes:",
        "    if False:",
        ("tests/data/test_checks.py",),
    ),
    Mutant(
        "data_zero_boxes_unchecked",
        "a dataset with no usable box refused",
        "projects/defeat/data/checks.py",
        "    if usable == 0:",
        "    if False:",
        ("tests/data/test_checks.py",),
    ),
    Mutant(
        "predict_into_inputs",
        "predict.py never writes into its input folder",
        "tools/predict.py",
        'folders = {"input folder (--input)": input_dir}',
        "folders = {}",
        ("tests/analysis/test_predict.py", "-k", "never_writes_into_the_input_folder"),
    ),
    Mutant(
        "predict_random_weights",
        "predict.py refuses weights that leave tensors random",
        "tools/predict.py",
        'load_weights_strictly(model, weights, "--weights", allow_random=allow_random)',
        'load_weights_strictly(model, weights, "--weights", allow_random=True)',
        ("tests/analysis/test_predict.py", "-k", "refuses_random_weights"),
    ),
    Mutant(
        "nonfinite_unexplained",
        "a NaN loss is reported naming the term",
        "projects/defeat/engine/nonfinite.py",
        "    trainer._write_metrics = checked",
        "    pass",
        ("tests/engine/test_run_guards.py",),
    ),
    Mutant(
        "setting_bool_untyped",
        "a string where a boolean belongs is refused",
        "projects/defeat/config/validation.py",
        "        if not isinstance(value, bool):",
        "        if False:",
        ("tests/config/test_validation.py",),
    ),
    Mutant(
        "warmup_off_by_one",
        "the KD warm-up ramps as (iteration + 1) / WARMUP_ITERS",
        "projects/defeat/modeling/schedule.py",
        "min(1.0, (iteration + 1) / warmup_iters)",
        "min(1.0, iteration / warmup_iters)",
        ("tests/modeling/test_distiller.py", "tests/modeling/test_losses.py"),
    ),
    Mutant(
        "head_all_objects",
        "head KL split by the RoI labels (background RoIs in the background term)",
        "projects/defeat/modeling/meta_arch/mixin.py",
        "is_object = (labels >= 0) & (labels < k)",
        "is_object = labels >= 0",
        ("tests/modeling/test_model.py", "tests/modeling/test_mixin.py"),
    ),
    Mutant(
        "dense_all_objects",
        "RetinaNet head KL: matched anchors are objects, the rest background",
        "projects/defeat/modeling/meta_arch/dense.py",
        "is_object = valid & (labels != self.num_classes)",
        "is_object = valid",
        ("tests/modeling/test_retinanet.py",),
    ),
    Mutant(
        "amp_not_autocast",
        "SOLVER.AMP.ENABLED on a CPU computes in bf16",
        "projects/defeat/engine/mixed_precision.py",
        '        with torch.autocast("cpu", dtype=self.precision):',
        '        with torch.autocast("cpu", dtype=self.precision, enabled=False):',
        ("tests/engine/test_mixed_precision.py",),
    ),
    Mutant(
        "amp_unchecked",
        "AMP on a CPU without bf16 refused before anything is written",
        "projects/defeat/engine/mixed_precision.py",
        "    if not cpu_bf16_supported():",
        "    if False:",
        ("tests/engine/test_mixed_precision.py",),
    ),
    Mutant(
        "output_over_teacher",
        "a run never writes over what it reads (the teacher's weights in OUTPUT_DIR)",
        "projects/defeat/engine/outputs.py",
        "if not own_record and written_by_run(output_dir, path, eval_only):",
        "if False:",
        ("tests/engine/test_hostile_inputs.py", "-k", "teachers_folder or fine_tuning or teacher_config_that"),
    ),
    Mutant(
        "output_second_run",
        "a second run into a folder with a run is refused unless --resume or --overwrite",
        "projects/defeat/engine/outputs.py",
        "    if not overwrite:\n        raise OutputError(",
        "    if False:\n        raise OutputError(",
        ("tests/engine/test_hostile_inputs.py", "-k", "second_run"),
    ),
    Mutant(
        "trailing_options",
        "options after the config overrides are options",
        "projects/defeat/engine/arguments.py",
        "    if flags:\n",
        "    if False:\n",
        ("tests/engine/test_hostile_inputs.py", "-k", "after_the_overrides"),
    ),
    Mutant(
        "coco_duplicate_ids",
        "two images with one id are refused",
        "projects/defeat/data/coco_json.py",
        'if img["id"] in by_id:',
        "if False:",
        ("tests/engine/test_hostile_inputs.py", "-k", "duplicate_image_ids or malformed_json"),
    ),
    Mutant(
        "coco_bbox_types",
        "a bbox must be four finite numbers",
        "projects/defeat/data/coco_json.py",
        "or not all(_number(v) for v in bbox)",
        "or False",
        ("tests/engine/test_hostile_inputs.py", "-k", "string_bbox or malformed_json"),
    ),
    Mutant(
        "test_set_classes",
        "a test set names the training set's classes in the same order",
        "projects/defeat/engine/preflight.py",
        "        if train_classes is not None and classes != train_classes[1]:\n"
        '            raise DataCheckError(\n                f"test',
        '        if False:\n            raise DataCheckError(\n                f"test',
        ("tests/engine/test_hostile_inputs.py", "-k", "test_set_with_other_classes"),
    ),
    Mutant(
        "exif_orientation",
        "an image's size is checked after its EXIF orientation",
        "projects/defeat/data/checks.py",
        "shown = (size[1], size[0]) if orientation in _SWAPPING_ORIENTATIONS else size",
        "shown = size",
        ("tests/engine/test_hostile_inputs.py", "-k", "exif"),
    ),
    Mutant(
        "strict_eval_weights",
        "weights that leave tensors random are refused for evaluation and prediction",
        "projects/defeat/checkpoint.py",
        "        if not allow_random:\n            raise WeightsError(message)",
        "        if False:\n            raise WeightsError(message)",
        ("tests/engine/test_hostile_inputs.py", "-k", "eval_only_with or strict_loading"),
    ),
    Mutant(
        "teacher_ap_other_checkpoint",
        "the teacher's AP is only shown for the weights it was measured on",
        "projects/defeat/engine/metrics_file.py",
        "        rows = at or after",
        "        pass",
        ("tests/analysis/test_hostile_tools.py", "-k", "teacher_ap or teacher_log"),
    ),
    Mutant(
        "predict_dataset_ids",
        "predictions.json gives the dataset's category ids",
        "tools/predict.py",
        '"category_id": category_ids[int(c)] if category_ids else int(c),',
        '"category_id": int(c),',
        ("tests/analysis/test_predict.py", "-k", "folder_drawn"),
    ),
    # ---- the settings table: every setting alive or refused ----
    Mutant(
        "cross_head_temperature_ignored",
        "the cross-head KL uses HEAD.TEMPERATURE",
        "projects/defeat/modeling/distiller.py",
        "obj, bg = decoupled_kl_loss(cross_logits, teacher_logits, is_object, self.temperature)",
        "obj, bg = decoupled_kl_loss(cross_logits, teacher_logits, is_object, 1.0)",
        ("tests/config/test_every_setting.py", "-k", "temperature"),
    ),
    Mutant(
        "cross_head_unscheduled",
        "the cross-head terms follow the KD schedule like every other term",
        "projects/defeat/modeling/meta_arch/mixin.py",
        (
            "        if d.cross_enabled:\n            cross = stage_logits(",
            "            losses.update(_stage_mean([d.cross_losses(",
            "        return d.scheduled(losses)\n\n    def teacher_rois(",
        ),
        (
            "        cross_terms = {}\n        if d.cross_enabled:\n            cross = stage_logits(",
            "            cross_terms.update(_stage_mean([d.cross_losses(",
            "        return {**d.scheduled(losses), **cross_terms}\n\n    def teacher_rois(",
        ),
        ("tests/config/test_every_setting.py", "-k", "schedule or warmup or max_iter"),
    ),
    Mutant(
        "a_default_changed_in_one_place",
        "a default is declared once and the docs say the same",
        "projects/defeat/config/validation.py",
        '"loss_defeat_cross_bg": 1.0,',
        '"loss_defeat_cross_bg": 2.0,',
        ("tests/config/test_every_setting.py", "-k", "table_is_what"),
    ),
    Mutant(
        "box_target_in_the_teachers_transform",
        "the box target is encoded with the student's box transform",
        "projects/defeat/modeling/meta_arch/mixin.py",
        "for s, tb, tl, tf in zip(student_deltas, t_boxes, t_logits, box_transforms(self.roi_heads))",
        "for s, tb, tl, tf in zip(student_deltas, t_boxes, t_logits, box_transforms(self.teacher.roi_heads))",
        ("tests/modeling/test_box_kd.py", "-k", "independent and rcnn"),
    ),
    Mutant(
        "cpu_amp_in_fp16",
        "SOLVER.AMP.ENABLED on a CPU autocasts to bf16",
        "projects/defeat/engine/mixed_precision.py",
        "    return CPUAutocastTrainer(model, data_loader, optimizer)",
        "    return CPUAutocastTrainer(model, data_loader, optimizer, precision=torch.float16)",
        ("tests/engine/test_mixed_precision.py", "-k", "autocasts_to_bf16"),
    ),
    Mutant(
        "inactive_setting_not_refused",
        "a value that cannot act (HEAD.ROIS_PER_IMAGE with the student's RoIs) is refused",
        "projects/defeat/config/validation.py",
        "        if reason.startswith(REFUSE):",
        "        if False:",
        ("tests/config/test_every_setting.py", "-k", "cannot_act"),
    ),
    Mutant(
        "gate_cache_ignores_values",
        "the gate's memory of checked settings is keyed by every value",
        "projects/defeat/config/settings.py",
        "    key = json.dumps(out, sort_keys=True, default=repr)",
        "    key = json.dumps(sorted(out), sort_keys=True, default=repr)",
        ("tests/config/test_every_setting.py", "-k", "arrives_the_same"),
    ),
    Mutant(
        "sched_kd_warmup_unchecked",
        "a KD warm-up longer than the run is refused",
        "projects/defeat/config/iterations.py",
        "    if _is_int(warmup) and warmup > max_iter:\n        raise DeFeatConfigError(",
        "    if False:\n        raise DeFeatConfigError(",
        ("tests/config/test_one_schedule.py", "-k", "kd_warmup"),
    ),
    Mutant(
        "sched_num_updates_stale",
        "milestones given on the command line count the run's iterations (num_updates follows train.max_iter)",
        "projects/defeat/config/iterations.py",
        "        node.num_updates = max_iter  # milestones given now are iterations of the run",
        "        pass",
        ("tests/config/test_one_schedule.py", "tests/config/test_iterations.py", "-k", "milestones or kept_as_given"),
    ),
    Mutant(
        "sched_kd_max_iter_free",
        "model.defeat.max_iter other than train.max_iter is refused",
        "projects/defeat/config/iterations.py",
        "        if _is_int(kd_max) and kd_max != max_iter:",
        "        if False:",
        ("tests/config/test_one_schedule.py", "-k", "kd_schedule_length"),
    ),
    Mutant(
        "sched_steps_outside_run",
        "LR steps at or past the end of the run are refused",
        "projects/defeat/config/iterations.py",
        "    outside = [s for s in steps if s <= 0 or s >= max_iter]",
        "    outside = [s for s in steps if s > max_iter]",
        ("tests/config/test_one_schedule.py", "-k", "outside"),
    ),
    Mutant(
        "sched_values_unchecked",
        "milestones without their values are refused at load time, in one line",
        "projects/defeat/config/iterations.py",
        "    if values is None or len(list(values)) != count:",
        "    if values is None:",
        ("tests/config/test_one_schedule.py", "-k", "without_their_values"),
    ),
    Mutant(
        "sched_cross_head_unscheduled",
        "every loss_defeat_* term is scaled by the same KD weight",
        "projects/defeat/modeling/meta_arch/mixin.py",
        (
            "        if d.cross_enabled:\n            cross = stage_logits(",
            "            losses.update(_stage_mean([d.cross_losses(",
            "            losses.update(_stage_mean(per_stage))\n        return d.scheduled(losses)",
        ),
        (
            "        unscheduled = {}\n        if d.cross_enabled:\n            cross = stage_logits(",
            "            unscheduled.update(_stage_mean([d.cross_losses(",
            "            losses.update(_stage_mean(per_stage))\n"
            "        losses = d.scheduled(losses)\n        losses.update(unscheduled)\n        return losses",
        ),
        ("tests/modeling/test_schedule.py", "-k", "every_loss_term"),
    ),
    Mutant(
        "cuda_check_skipped",
        "MODEL.DEVICE cuda without CUDA is refused before anything is written",
        "projects/defeat/engine/machine.py",
        'if kind == "cuda" and not torch.cuda.is_available():',
        "if False:",
        ("tests/engine/test_machine.py", "-k", "cuda"),
    ),
    Mutant(
        "url_weights_unchecked",
        "a URL weight neither cached nor reachable is refused, naming the key",
        "projects/defeat/engine/machine.py",
        "        if not offline and host_reachable(url):\n            continue",
        "        if True:\n            continue",
        ("tests/engine/test_machine.py", "-k", "unreachable or offline"),
    ),
    Mutant(
        "export_without_category_ids",
        "exports carry the dataset's category ids in the order of the class indices",
        "projects/defeat/data/classes.py",
        "            ids = [by_index[i] for i in range(len(classes))]",
        "            ids = None",
        ("tests/analysis/test_class_identity.py",),
    ),
    Mutant(
        "export_names_sorted",
        "the exported names are in the order of the class indices (the ids' order)",
        "projects/defeat/data/classes.py",
        '"names": [str(c) for c in classes]',
        '"names": sorted(str(c) for c in classes)',
        ("tests/analysis/test_class_identity.py",),
    ),
    Mutant(
        "trace_without_classes",
        "defeat_trace.json carries the class names",
        "tools/trace_student.py",
        '"classes": classes["names"] if classes else None,',
        '"classes": None,',
        ("tests/analysis/test_class_identity.py", "-k", "trace"),
    ),
    Mutant(
        "ap_nan_shown",
        "an AP table shows 'no detections' for a model that detected nothing",
        "projects/defeat/analysis/run_summary.py",
        "        return NO_DETECTIONS if no_detections else NOT_COMPUTED",
        '        return f"{value:.2f}"',
        ("tests/analysis/test_run_summary.py", "-k", "nothing"),
    ),
    Mutant(
        "inherit_ignores_channel_order",
        "a teacher of the other channel order gives its first image convolution reversed",
        "projects/defeat/modeling/inherit.py",
        "    flip = image_facing_tensors(student) if formats in _CHANNEL_ORDERS else {}",
        "    flip = {}",
        ("tests/modeling/test_inherit.py", "-k", "channel_order"),
    ),
    Mutant(
        "run_lock_ignored",
        "a live run's lock refuses a second run in its folder",
        "projects/defeat/engine/run_folder.py",
        "if held is None or held[1] != _host() or _alive(held[0]):",
        "if False:",
        ("tests/engine/test_run_transaction.py", "-k", "lock and not heavy and not train_net and not training"),
    ),
    Mutant(
        "overwrite_deletes_before_start",
        "--overwrite keeps the earlier run until the new one is under way",
        "projects/defeat/engine/run_folder.py",
        "        target, moved = set_aside_files(self.folder, names)\n",
        "        target, moved = set_aside_files(self.folder, names)\n"
        "        shutil.rmtree(target)\n        os.makedirs(target)\n",
        ("tests/engine/test_run_transaction.py", "-k", "failed_start_puts_everything_back"),
    ),
    Mutant(
        "failed_start_kept",
        "a start that fails leaves the output folder as it was",
        "projects/defeat/engine/run_folder.py",
        "            self._roll_back()  # puts a stale lock back too, and removes ours",
        "            self._release()",
        ("tests/engine/test_run_transaction.py", "-k", "failed_start"),
    ),
    Mutant(
        "one_line_reraises",
        "an entry point ends a DeFeat or file error in one line, exit status 1",
        "projects/defeat/engine/entry.py",
        "    except EXPECTED_ERRORS as e:\n        keep, note = _keep_traceback()",
        "    except EXPECTED_ERRORS as e:\n        keep, note = True, ''",
        ("tests/engine/test_run_transaction.py", "-k", "expected_errors_are_one_line"),
    ),
    Mutant(
        "entry_point_unwrapped",
        "every entry point goes through run_entry_point",
        "tools/predict.py",
        'run_entry_point(main, ARGS, script="predict.py")',
        "main(ARGS)",
        ("tests/engine/test_run_transaction.py", "-k", "every_entry_point"),
    ),
    Mutant(
        "predict_image_ids_positions",
        "predict.py gives an image the dataset does not list a new id past the dataset's largest",
        "tools/predict.py",
        "            ids[path] = fresh\n            fresh += 1",
        "            ids[path] = images.index(path)",
        ("tests/analysis/test_predict.py", "-k", "image_ids_are_unique"),
    ),
    Mutant(
        "predict_training_class_names",
        "predict.py refuses class names that are not the model's training set's",
        "tools/predict.py",
        "    if known is None or not known[1] or known[1] == list(classes):\n        return",
        "    if True:\n        return",
        ("tests/analysis/test_predict.py", "-k", "another_dataset_than"),
    ),
    Mutant(
        "predict_truncated_images",
        "predict.py refuses a truncated input image before writing anything",
        "tools/predict.py",
        '    if mode == "none":\n        return',
        "    if True:\n        return",
        ("tests/analysis/test_predict.py", "-k", "truncated_image_is_refused"),
    ),
    Mutant(
        "predict_partial_results",
        "predict.py writes predictions.json for the images done when one fails",
        "tools/predict.py",
        "        except BaseException as e:\n            atomic_write(predictions,",
        "        except BaseException as e:\n            (predictions,",
        ("tests/analysis/test_predict.py", "-k", "fails_mid_way"),
    ),
    Mutant(
        "summary_gap_share_flag",
        "the summary flags a gap share outside 0-100 %",
        "projects/defeat/analysis/run_summary.py",
        "    if closed is None or 0.0 <= closed <= 100.0:",
        "    if True:",
        ("tests/analysis/test_run_summary.py", "-k", "gap_share_outside"),
    ),
    Mutant(
        "summary_defeat_teacher",
        "the summary refuses a DeFeat run given as the teacher",
        "projects/defeat/analysis/run_summary.py",
        "    if teacher is not None and teacher.defeat:",
        "    if False:",
        ("tests/analysis/test_run_summary.py", "-k", "contradict or defeat_config"),
    ),
    Mutant(
        "summary_same_student",
        "the summary refuses a student alone and a DeFeat run of different students",
        "projects/defeat/analysis/run_summary.py",
        "        if differ:\n",
        "        if False:\n",
        ("tests/analysis/test_run_summary.py", "-k", "plain_run_as_the_defeat_run"),
    ),
    Mutant(
        "summary_unfinished_runs",
        "the summary names a run whose last checkpoint is newer than its last evaluation",
        "projects/defeat/analysis/run_summary.py",
        "    if found and iteration is not None and int(found.group(1)) > iteration:",
        "    if False:",
        ("tests/analysis/test_run_summary.py", "-k", "unfinished"),
    ),
    Mutant(
        "summary_no_detections_named",
        "the summary names a run without detections instead of comparing its NaN AP",
        "projects/defeat/analysis/run_summary.py",
        "    empty = [role for role in ROLES if _no_detections(runs[role].metrics)]",
        "    empty = []",
        ("tests/analysis/test_run_summary.py", "-k", "without_detections"),
    ),
    Mutant(
        "output_below_a_file",
        "every tool refuses an output path below a file before its work",
        "projects/defeat/engine/outputs.py",
        "    if not os.path.isdir(existing):\n        raise OutputError(",
        "    if False:\n        raise OutputError(",
        ("tests/analysis/test_tool_outputs.py", "-k", "below_a_file"),
    ),
    Mutant(
        "output_not_writable",
        "an output folder that cannot be written is refused before the work",
        "projects/defeat/engine/outputs.py",
        "    if not os.access(existing, os.W_OK | os.X_OK):",
        "    if False:",
        ("tests/analysis/test_tool_outputs.py", "-k", "writable"),
    ),
    Mutant(
        "image_outside_root",
        "a dataset image that resolves outside its IMAGE_ROOT is refused by the tools that write beside it",
        "projects/defeat/data/datasets.py",
        "        if path != root and not path.startswith(root.rstrip(os.sep) + os.sep):",
        "        if False:",
        ("tests/analysis/test_tool_outputs.py", "-k", "outside"),
    ),
    Mutant(
        "datasets_variable_named",
        "an error from DEFEAT_COCO_DATASETS names the variable",
        "projects/defeat/data/datasets.py",
        "        return register_dataset_specs(specs_from_env(environ))\n    except DatasetSpecError as e:",
        "        return register_dataset_specs(specs_from_env(environ))\n    except KeyError as e:",
        ("tests/analysis/test_tool_outputs.py", "-k", "variable"),
    ),
    Mutant(
        "run_students_not_reused",
        "python -m defeat run reuses the finished student runs",
        "projects/defeat/demo/pipeline.py",
        "todo = [role for role in roles if not read_stamp(outs[role], digests[role], STAMP)]",
        "todo = list(roles)",
        ("tests/demo/test_run.py", "-k", "end_to_end"),
    ),
    Mutant(
        "run_val_is_train",
        "python -m defeat run refuses a validation json that is the training json",
        "projects/defeat/demo/pipeline.py",
        "if os.path.realpath(train.json_file) == os.path.realpath(val.json_file):",
        "if False:",
        ("tests/demo/test_run.py", "-k", "refused"),
    ),
    Mutant(
        "run_output_in_images",
        "python -m defeat run refuses a report folder inside an image folder",
        "projects/defeat/demo/pipeline.py",
        "    check_output_dir(\n        output,",
        "    (lambda *a, **k: None)(\n        output,",
        ("tests/demo/test_run.py", "-k", "refused"),
    ),
    Mutant(
        "run_training_data_unchecked",
        "python -m defeat run checks every training image before training",
        "projects/defeat/demo/pipeline.py",
        "    check_training_data({train.name: dicts}, len(classes), key)",
        "    pass",
        ("tests/demo/test_run.py", "-k", "refused"),
    ),
    Mutant(
        "schedule_warmup_uncapped",
        "the preset schedule's warm-up is at most a fifth of the run",
        "projects/defeat/config/presets.py",
        "warmup = max(1, min(int(warmup_iters), int(n * MAX_WARMUP_FRACTION)))",
        "warmup = int(warmup_iters)",
        ("tests/demo/test_run.py", "-k", "schedule"),
    ),
    Mutant(
        "run_configs_unchecked",
        "python -m defeat run loads the configs it will write before writing anything",
        "projects/defeat/demo/pipeline.py",
        "    check_run_configs(plan)\n",
        "",
        ("tests/demo/test_run.py", "-k", "refused"),
    ),
    Mutant(
        "demo_keeps_replaced_runs",
        "a finished demo or benchmark run drops the earlier runs its --overwrite set aside",
        "projects/defeat/demo/experiments.py",
        "    _run_script(train_script, config_file, overrides, output_dir, log_name, threads, on_progress)\n"
        "    _drop_replaced_runs(output_dir)",
        "    _run_script(train_script, config_file, overrides, output_dir, log_name, threads, on_progress)",
        ("tests/demo/test_benchmarks.py", "-k", "drops"),
    ),
    Mutant(
        "config_kind_branch_outside_config",
        "no code outside defeat/config tells a YAML config from a LazyConfig",
        "projects/defeat/analysis/run_summary.py",
        "    fields = saved_model_fields(config if type(config) is dict else saved_form(config))",
        "    from detectron2.config import CfgNode\n\n"
        "    fields = saved_model_fields(config if isinstance(config, (dict, CfgNode)) else saved_form(config))",
        ("tests/test_layers.py",),
    ),
    Mutant(
        "saved_form_canonical_targets",
        "a loaded LazyConfig is compared in the form its saved config.yaml reads back as",
        "projects/defeat/config/files.py",
        'str(k): _canonical(v) if k == "_target_" and isinstance(v, str) else _named(v) for k, v in value.items()',
        "str(k): _named(v) for k, v in value.items()",
        ("tests/analysis/test_run_summary.py", "-k", "same_student"),
    ),
    Mutant(
        "worker_error_kept_as_traceback",
        "a user's mistake in a launch() worker process ends as one line, not torch's traceback",
        "projects/defeat/engine/entry.py",
        "        if cls is None or not issubclass(cls, EXPECTED_ERRORS):",
        "        if True:",
        ("tests/engine/test_run_transaction.py", "-k", "worker"),
    ),
    Mutant(
        "balance_names_neck_always",
        "the KD-balance warning names the weights whose settings rule multiplies the largest term",
        "projects/defeat/engine/kd_balance.py",
        "parts = {path[:-1] for path, rule in RULES.items() if rule.term == term}",
        'parts = {("neck",)} if term.startswith("loss_defeat_") else set()',
        ("tests/engine/test_kd_balance.py",),
    ),
    Mutant(
        "balance_no_sibling",
        "the KD-balance warning names the obj/bg sibling of the dominant term's weight",
        "projects/defeat/engine/kd_balance.py",
        "if rule.term and path[:-1] in parts and (path[:-1] or rule.term == term)",
        "if rule.term == term",
        ("tests/engine/test_kd_balance.py",),
    ),
    Mutant(
        "balance_trend_no_last_window",
        "the end-of-run line compares the first window with the last one",
        "projects/defeat/engine/kd_balance.py",
        "trend_message(WindowSums(self._first), WindowSums(list(self._last)))",
        "trend_message(WindowSums(self._first), WindowSums(self._first))",
        ("tests/engine/test_kd_balance.py",),
    ),
    Mutant(
        "balance_trend_meaning_swapped",
        "a rising ratio with falling detection losses is explained as the student fitting its data",
        "projects/defeat/engine/kd_balance.py",
        "if last.ratio > first.ratio * STEADY_CHANGE and not last.det < first.det:",
        "if last.ratio > first.ratio * STEADY_CHANGE and last.det < first.det:",
        ("tests/engine/test_kd_balance.py",),
    ),
    Mutant(
        "balance_trend_overlapping_windows",
        "a run with fewer than two windows of KD iterations is not compared",
        "projects/defeat/engine/kd_balance.py",
        "if self._seen < 2 * self.window:",
        "if self._seen < self.window:",
        ("tests/engine/test_kd_balance.py",),
    ),
    Mutant(
        "balance_trend_ignores_schedule",
        "the end-of-run line names a KD schedule weight that differs between the windows",
        "projects/defeat/engine/kd_balance.py",
        "float(weight) if at == now else None",
        "None",
        ("tests/engine/test_kd_balance.py",),
    ),
    Mutant(
        "predict_boxes_in_resized_pixels",
        "predict.py gives boxes in the original image's pixels (the test-time resize undone)",
        "tools/predict.py",
        'return self.model([{"image": tensor, "height": height, "width": width}])[0]',
        'return self.model([{"image": tensor}])[0]',
        ("tests/analysis/test_predict.py", "-k", "resized or uniform"),
    ),
    Mutant(
        "predict_no_test_resize",
        "predict.py resizes each image as at test time before the model sees it",
        "tools/predict.py",
        "            self.resize(aug)\n",
        "",
        ("tests/analysis/test_predict.py", "-k", "resized or uniform"),
    ),
    Mutant(
        "trace_input_not_resized",
        "the traced student's input is resized as at test time; its boxes scale back to DefaultPredictor's",
        "projects/defeat/analysis/deploy.py",
        "    T.AugmentationList(list(augmentations))(aug)\n",
        "",
        ("tests/analysis/test_trace.py", "-k", "scaled_back"),
    ),
    Mutant(
        "crowd_drawn_as_gt",
        "predict.py --show-gt draws no crowd box (a region, not an object) and counts them",
        "tools/predict.py",
        'anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]',
        'anns = list(record.get("annotations", []))',
        ("tests/analysis/test_predict.py", "-k", "crowd"),
    ),
    Mutant(
        "crowd_outside_warned",
        "a crowd box outside its image is not reported as clipped (Detectron2 drops it)",
        "projects/defeat/data/checks.py",
        'if height is None or width is None or anno.get("iscrowd", 0):',
        "if height is None or width is None:",
        ("tests/data/test_crowd.py",),
    ),
    Mutant(
        "crowd_boxes_usable",
        "a dataset of crowd boxes only has no box to train on",
        "projects/defeat/data/checks.py",
        "    usable = total - zero - crowd",
        "    usable = total - zero",
        ("tests/data/test_crowd.py",),
    ),
    Mutant(
        "crowd_category_not_empty",
        "a category with crowd boxes only is an empty category (never trained)",
        "projects/defeat/data/coco_json.py",
        'if not anno.get("iscrowd", 0):\n            boxes_per_cat[anno["category_id"]] += 1',
        'if True:\n            boxes_per_cat[anno["category_id"]] += 1',
        ("tests/data/test_crowd.py",),
    ),
    Mutant(
        "crowd_counted_in_stats",
        "the dataset inspector counts no crowd box as an object",
        "projects/defeat/data/box_levels.py",
        'skipped["crowd"] += 1\n                continue',
        'skipped["crowd"] += 1',
        ("tests/data/test_crowd.py",),
    ),
    Mutant(
        "fresh_start_strict",
        "a fresh start loads partial MODEL.WEIGHTS (e.g. ImageNet backbone only); only --resume is strict",
        "projects/defeat/checkpoint.py",
        'if getattr(self, "_resuming", False) and self.strict_resume:',
        "if self.strict_resume:",
        ("tests/engine/test_partial_weights.py", "-k", "fresh_start"),
    ),
    Mutant(
        "resume_refusal_unnamed_file",
        "a --resume refused for another model's checkpoint names that file",
        "projects/defeat/checkpoint.py",
        "the checkpoint {self._resume_file or self.save_dir} was",
        "the checkpoint in {self.save_dir} was",
        ("tests/engine/test_partial_weights.py", "-k", "refused"),
    ),
    Mutant(
        "trace_checks_first_image_only",
        "the trace tool compares traced and eager detections on every check image",
        "projects/defeat/analysis/deploy.py",
        "        for image in images:",
        "        for image in images[:1]:",
        ("tests/analysis/test_trace.py", "-k", "three_checks"),
    ),
    Mutant(
        "trace_check_not_mirrored",
        "the trace tool's second check image is the sample mirrored",
        "projects/defeat/analysis/deploy.py",
        "np.ascontiguousarray(sample[:, ::-1])",
        "np.ascontiguousarray(sample)",
        ("tests/analysis/test_trace.py", "-k", "three_checks"),
    ),
    Mutant(
        "trace_check_same_aspect",
        "the trace tool's third check image has the other aspect ratio",
        "projects/defeat/analysis/deploy.py",
        "random_image(width, height, seed=seed)",
        "random_image(height, width, seed=seed)",
        ("tests/analysis/test_trace.py", "-k", "three_checks"),
    ),
    Mutant(
        "trace_tool_sample_only",
        "trace_student.py runs the mirrored and other-aspect checks, not only the sample",
        "tools/trace_student.py",
        "for im in (sample, *deploy.check_images(sample))",
        "for im in (sample,)",
        ("tests/analysis/test_trace.py", "-k", "three_checks"),
    ),
    Mutant(
        "startup_heavy_import_at_top",
        "a script answers --help and argument errors before importing torch",
        "tools/predict.py",
        "DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)\n",
        "import torch  # noqa: F401\n\nDEFEAT_LIGHT_START = True\n",
        ("tests/test_startup.py", "-k", "every_command"),
    ),
    Mutant(
        "startup_light_parser_imports_detectron2",
        "the train scripts' parser imports no torch",
        "projects/defeat/engine/arguments.py",
        "from ..data.datasets import IMAGE_CHECKS, add_dataset_argument, check_dataset_specs\n",
        "from ..data.checks import IMAGE_CHECKS\n"
        "from ..data.datasets import add_dataset_argument, check_dataset_specs\n",
        ("tests/test_startup.py", "-k", "every_command"),
    ),
    Mutant(
        "startup_dash_m_not_light",
        "python -m defeat ... answers before importing torch",
        "projects/defeat/__init__.py",
        'LIGHT_COMMANDS = ("defeat", "defeat.demo", "defeat.demo.data")',
        "LIGHT_COMMANDS = ()",
        ("tests/test_startup.py", "-k", "every_command"),
    ),
    Mutant(
        "startup_missing_config_late",
        "train_net.py refuses a missing config file before its heavy imports",
        "projects/defeat/engine/arguments.py",
        "    check_config_file(args.config_file)\n    return args",
        "    return args",
        ("tests/test_startup.py", "-k", "every_command"),
    ),
    Mutant(
        "startup_parse_unwrapped",
        "a script's argument errors before its heavy imports go through run_entry_point too",
        "tools/predict.py",
        'ARGS = run_entry_point(parse_args, script="predict.py")',
        "ARGS = parse_args()",
        ("tests/engine/test_run_transaction.py", "-k", "every_entry_point"),
    ),
    Mutant(
        "startup_any_dash_m_waits",
        "import defeat in another package's python -m registers the models at once",
        "projects/defeat/__init__.py",
        '    return _module_after_dash_m(getattr(_sys, "orig_argv", ())) in LIGHT_COMMANDS',
        "    return True",
        ("tests/test_startup.py", "-k", "light_start"),
    ),
    Mutant(
        "startup_first_use_not_registered",
        "the first use of a public name of a waiting defeat imports and registers everything",
        "projects/defeat/__init__.py",
        "        finish_import()\n        return globals()[name]",
        "        return globals().get(name)",
        ("tests/test_startup.py", "-k", "light_start"),
    ),
    Mutant(
        "startup_parser_not_detectron2s",
        "the light parser of train_net.py has Detectron2's options and defaults",
        "projects/defeat/engine/arguments.py",
        'parser.add_argument("--num-machines", type=int, default=1,',
        'parser.add_argument("--num-machines", type=int, default=2,',
        ("tests/test_startup.py", "-k", "detectron2s"),
    ),
    Mutant(
        "startup_heavy_warnings_unrecorded",
        "the heavy imports' known-harmless warnings stay hidden after the light start",
        "projects/defeat/engine/quiet.py",
        "    with warnings.catch_warnings(record=True) as early:\n"
        "        import defeat\n\n        defeat.finish_import()",
        "    import defeat\n\n    defeat.finish_import()\n    with warnings.catch_warnings(record=True) as early:",
        ("tests/engine/test_quiet.py", "-k", "prints_none"),
    ),
    Mutant(
        "startup_specs_skip_environment",
        "a command checks the specs of DEFEAT_COCO_DATASETS first, before its heavy imports",
        "projects/defeat/data/datasets.py",
        "        env = specs_from_env(environ) if environment else []",
        "        env = []",
        ("tests/data/test_datasets.py", "-k", "without_registering"),
    ),
    Mutant(
        "demo_teacher_processes",
        "make demo trains its teacher in the processes it always did (two one-thread data-parallel ones)",
        "projects/defeat/config/presets.py",
        "    teacher_processes=2,  # on 2 cores",
        "    teacher_processes=3,  # on 2 cores",
        ("tests/demo/test_demo_jobs.py",),
    ),
    Mutant(
        "demo_precision_dropped",
        "make demo trains every run in the precision it always did (bf16 autocast where the CPU has it)",
        "projects/defeat/demo/pipeline.py",
        '            "SOLVER.AMP.ENABLED": plan.amp,\n',
        "",
        ("tests/demo/test_demo_jobs.py",),
    ),
    Mutant(
        "demo_teacher_evaluated_before_the_students",
        "make demo evaluates its data-parallel teacher beside the students, on one thread",
        "projects/defeat/demo/pipeline.py",
        'teacher = ensure_teacher(plan, "teacher", files["teacher"], students_s, defer=True)',
        'teacher = ensure_teacher(plan, "teacher", files["teacher"], students_s, defer=False)',
        ("tests/demo/test_demo_jobs.py",),
    ),
    Mutant(
        "demo_retinanet_teacher_from_scratch",
        "make demo-retinanet's teacher starts from make demo's teacher",
        "projects/defeat/demo/pipeline.py",
        '"teacher": {"MODEL.WEIGHTS": os.path.join(plan.init_run, "model_final.pth")} if plan.init_run else {},',
        '"teacher": {},',
        ("tests/demo/test_demo_jobs.py", "-k", "retinanet"),
    ),
    Mutant(
        "demo_iters_not_scaled",
        "a demo preset writes a changed length with the schedule the loader scales to it",
        "projects/defeat/demo/pipeline.py",
        "    if is_defeat_config(cfg):\n        out[",
        "    if False:\n        out[",
        ("tests/demo/test_demo.py", "-k", "own_schedule"),
    ),
    Mutant(
        "teacher_cache_counts_precision",
        "a teacher trained in one precision is reused by a run in the other",
        "projects/defeat/demo/pipeline.py",
        'config_digest(config_file, ["SOLVER.AMP.ENABLED", "False"])',
        "config_digest(config_file, [])",
        ("tests/demo/test_demo.py", "-k", "precision_and"),
    ),
    Mutant(
        "eval_output_no_per_class",
        "the teacher evaluated beside the students has its AP per class in the summary",
        "projects/defeat/demo/experiments.py",
        '                metrics[f"AP-{name}"] = float(value)',
        "                pass",
        ("tests/demo/test_demo.py", "-k", "per_class"),
    ),
    Mutant(
        "demo_retinanet_own_init_teacher",
        "make demo-retinanet starts its teacher from make demo's teacher folder",
        "projects/defeat/demo/runner.py",
        'start = os.path.join(args.output, "runs", RUN_DIRS["teacher"])',
        'start = os.path.join(report, "runs", "init_teacher")',
        ("tests/demo/test_demo.py", "-k", "arguments or configs_name"),
    ),
    Mutant(
        "run_overrides_written_as_given",
        "python -m defeat run writes a whole number for a float override so that the config reads it",
        "projects/defeat/demo/pipeline.py",
        "opts = floats_where_expected(cfg, plan.opts)",
        "opts = list(plan.opts)",
        ("tests/demo/test_run.py", "-k", "written_as"),
    ),
    Mutant(
        "auto_levels_off_by_one",
        "SCALE_BASE auto is the inspector's suggestion over the levels of NECK.IN_FEATURES",
        "projects/defeat/data/box_levels.py",
        "    value, distance = suggest_scale_base(images, num_levels)\n",
        "    value, distance = suggest_scale_base(images, num_levels + 1)\n",
        ("tests/data/test_box_levels.py", "-k", "suggestion_of_the_resized"),
    ),
    Mutant(
        "auto_unresized_boxes",
        "SCALE_BASE auto sizes the boxes as resized at test time",
        "projects/defeat/data/box_levels.py",
        "        images += resize_records(dicts, min_size, max_size)[0]",
        "        images += resize_records(dicts, 0, 0)[0]",
        ("tests/data/test_box_levels.py", "-k", "suggestion_of_the_resized"),
    ),
    Mutant(
        "auto_no_cap",
        "the suggested SCALE_BASE is at most the largest box side",
        "projects/defeat/data/box_levels.py",
        "        base = min(base, round(largest, 2))",
        "        base = base",
        ("tests/data/test_box_levels.py", "-k", "capped"),
    ),
    Mutant(
        "auto_boxless_accepted",
        "SCALE_BASE auto on a training set without boxes is refused",
        "projects/defeat/data/box_levels.py",
        "    if not boxes:\n        key = setting_name",
        "    if False:\n        key = setting_name",
        ("tests/data/test_box_levels.py", "-k", "without_boxes"),
    ),
    Mutant(
        "auto_worker_own_number",
        "every process takes the main process's SCALE_BASE",
        "projects/defeat/data/box_levels.py",
        "        choice = comm.all_gather(choice)[0]",
        "        choice = comm.all_gather(choice)[-1]",
        ("tests/data/test_box_levels.py", "-k", "other_processes"),
    ),
    Mutant(
        "auto_resume_rereads",
        "a resumed run takes the SCALE_BASE its config.yaml recorded",
        "projects/defeat/engine/script.py",
        "            saved = (float(value), file)",
        "            saved = None",
        ("tests/data/test_box_levels.py", "-k", "resumed_run"),
    ),
    Mutant(
        "auto_saved_as_auto",
        "a run's config.yaml holds the number SCALE_BASE auto resolved to",
        "train_net.py",
        "    resolved = resolve_data_settings(cfg, args)  # SCALE_BASE auto -> a number, before config.yaml is saved\n"
        "    default_setup(cfg, args)\n",
        "    default_setup(cfg, args)\n    resolved = resolve_data_settings(cfg, args)\n",
        ("tests/engine/test_data_settings_runs.py", "-k", "train_net_saves"),
    ),
    Mutant(
        "auto_with_all_warned",
        "SCALE_BASE auto with MASK_ASSIGN all or coupled is refused",
        "projects/defeat/config/validation.py",
        '            (REFUSE if s["neck"]["scale_base"] == AUTO else "")',
        '            ""',
        ("tests/data/test_box_levels.py", "-k", "cannot_act"),
    ),
    Mutant(
        "auto_unresolved_model",
        "a model built from an unresolved SCALE_BASE auto is refused with what to do",
        "projects/defeat/modeling/distiller.py",
        '        if self.neck_enabled and neck["mask_assign"] == "scale":\n            raise DeFeatConfigError(',
        "        if False:\n            raise DeFeatConfigError(",
        ("tests/data/test_box_levels.py", "-k", "cannot_act"),
    ),
    Mutant(
        "auto_yaml_refused",
        "a YAML file or override takes SCALE_BASE auto",
        "projects/defeat/config/files.py",
        "            node[path[-1].upper()] = None\n",
        "",
        ("tests/data/test_box_levels.py", "-k", "yaml_files"),
    ),
    Mutant(
        "balance_inverted",
        "the KD balance factor is TARGET_RATIO / the measured ratio",
        "projects/defeat/engine/kd_balance.py",
        "    return target * det / kd",
        "    return target * kd / det",
        ("tests/engine/test_kd_target_ratio.py", "-k", "target_over"),
    ),
    Mutant(
        "balance_scheduled_ratio",
        "the KD balance measures the KD terms at full schedule weight",
        "projects/defeat/engine/kd_balance.py",
        "            self._kd += kd / w",
        "            self._kd += kd",
        ("tests/engine/test_kd_target_ratio.py", "-k", "target_over"),
    ),
    Mutant(
        "balance_early",
        "the KD balance factor is set after BALANCE.ITERS measured iterations, not before",
        "projects/defeat/engine/kd_balance.py",
        "        if self._counted >= d.balance_iters:",
        "        if self._counted >= d.balance_iters - 1:",
        ("tests/engine/test_kd_target_ratio.py", "-k", "target_over"),
    ),
    Mutant(
        "balance_not_applied",
        "the balance factor multiplies every loss_defeat_* term of the loss dict",
        "projects/defeat/modeling/distiller.py",
        "            return {k: v * w * self.balance_factor for k, v in losses.items()}",
        "            return {k: v * w for k, v in losses.items()}",
        ("tests/engine/test_kd_target_ratio.py", "-k", "every_kd_term"),
    ),
    Mutant(
        "balance_not_saved",
        "the balance factor is saved with the model",
        "projects/defeat/modeling/distiller.py",
        '            self.register_buffer("balance_factor", torch.tensor(1.0))',
        '            self.register_buffer("balance_factor", torch.tensor(1.0), persistent=False)',
        ("tests/engine/test_kd_target_ratio.py", "-k", "survives"),
    ),
    Mutant(
        "balance_remeasured",
        "a resumed run keeps the checkpoint's factor and does not measure again",
        "projects/defeat/engine/kd_balance.py",
        "        if restored is not None:\n            factor, at = restored",
        "        if False:\n            factor, at = restored",
        ("tests/engine/test_kd_target_ratio.py", "-k", "survives"),
    ),
    Mutant(
        "balance_inherited",
        "a fresh run measures its own factor (MODEL.WEIGHTS from a balanced run)",
        "projects/defeat/engine/start.py",
        "            distiller.reset_kd_balance()",
        "            pass",
        ("tests/engine/test_kd_target_ratio.py", "-k", "survives"),
    ),
    Mutant(
        "balance_local_sums",
        "under DDP every process takes the main process's sums",
        "projects/defeat/engine/kd_balance.py",
        "        measured = [g for g in gathered if g[2] > 0]",
        "        measured = [(self._kd, self._det, self._logged)]",
        ("tests/engine/test_kd_target_ratio.py", "-k", "ddp"),
    ),
    Mutant(
        "balance_after_checkpointer",
        "the checkpoint of the iteration that sets the factor holds it (YAML trainer)",
        "projects/defeat/engine/trainer.py",
        "        ret.insert(saver, KDTargetRatioHook())",
        "        ret.append(KDTargetRatioHook())",
        ("tests/engine/test_data_settings_runs.py", "-k", "train_net_saves"),
    ),
    Mutant(
        "balance_after_checkpointer_lazy",
        "the checkpoint of the iteration that sets the factor holds it (LazyConfig trainer)",
        "projects/defeat/engine/lazy_trainer.py",
        ("            KDTargetRatioHook(),  # before the checkpointer", "            KDBalanceHook(),"),
        ("            # before the checkpointer", "            KDBalanceHook(),\n            KDTargetRatioHook(),"),
        ("tests/engine/test_data_settings_runs.py", "-k", "lazy_train_net"),
    ),
    Mutant(
        "balance_never_ending",
        "a KD balance measured to the end of the run is refused",
        "projects/defeat/config/iterations.py",
        "and _is_int(iters) and iters >= max_iter:",
        "and _is_int(iters) and iters > max_iter:",
        ("tests/engine/test_kd_target_ratio.py", "-k", "does_not_end"),
    ),
    Mutant(
        "balance_iters_unwarned",
        "BALANCE.ITERS without TARGET_RATIO is named in a warning",
        "projects/defeat/config/validation.py",
        '"the KD balance is off (MODEL.DEFEAT.BALANCE.TARGET_RATIO 0)"',
        "None",
        ("tests/config/test_every_setting.py", "-k", "switched_off"),
    ),
    Mutant(
        "gpu_preset_students_side_by_side",
        "the GPU preset's students train one after the other on the one GPU",
        "projects/defeat/demo/pipeline.py",
        "run_parallel(jobs, workers=min(2 if plan.preset.side_by_side else 1, len(jobs)))",
        "run_parallel(jobs, workers=min(2, len(jobs)))",
        ("tests/demo/test_run.py", "-k", "one_after_the_other"),
    ),
    Mutant(
        "run_machine_unchecked",
        "python -m defeat run refuses a missing CUDA device or an unreachable download before writing",
        "projects/defeat/demo/pipeline.py",
        "        check_machine(\n            cfg,",
        "        (lambda *a, **k: None)(\n            cfg,",
        ("tests/demo/test_run.py", "-k", "without_cuda_or_weights"),
    ),
    Mutant(
        "gpu_preset_cpu_rule",
        "the GPU preset's runs get its own schedule rule (24 passes, at least 1000 iterations)",
        "projects/defeat/demo/pipeline.py",
        "            epochs=plan.preset.epochs,\n",
        "",
        ("tests/demo/test_run.py", "-k", "gpu_preset_schedule"),
    ),
    Mutant(
        "rt_output_empty",
        "an empty OUTPUT_DIR is refused, not taken as the current folder",
        "projects/defeat/engine/run_folder.py",
        "        if not path.strip():\n            raise OutputError(",
        "        if path is None:\n            raise OutputError(",
        ("tests/engine/test_red_team.py", "-k", "empty_output_dir or lazy_output_dir_empty"),
    ),
    Mutant(
        "rt_created_guard",
        "a failed start removes only a folder it created",
        "projects/defeat/engine/run_folder.py",
        "if not os.path.lexists(top):  # never an entry that was there",
        "if True:  # never an entry that was there",
        ("tests/engine/test_red_team.py", "-k", "failed_start_never"),
    ),
    Mutant(
        "rt_unexpanded",
        "OUTPUT_DIR with ~ or $VAR left unexpanded is refused",
        "projects/defeat/engine/run_folder.py",
        'if path.startswith("~") or _UNEXPANDED.search(path):',
        'if path.startswith("~~"):',
        ("tests/engine/test_red_team.py", "-k", "unexpanded"),
    ),
    Mutant(
        "rt_dangling_output",
        "an OUTPUT_DIR through a link to nothing is named and the link kept",
        "projects/defeat/engine/run_folder.py",
        "if os.path.islink(existing) and not os.path.exists(existing):",
        "if False:",
        ("tests/engine/test_red_team.py", "-k", "link_to_nothing_is_refused"),
    ),
    Mutant(
        "rt_tool_output_empty",
        "a tool's empty output path is refused",
        "projects/defeat/engine/outputs.py",
        "    if not str(path).strip():\n        what =",
        "    if path is None:\n        what =",
        ("tests/analysis/test_red_team_tools.py", "-k", "empty_output"),
    ),
    Mutant(
        "rt_output_dir_null",
        "train.output_dir=null is an empty output folder",
        "projects/defeat/config/files.py",
        'return "" if value is None else str(value)',
        "return str(value)",
        ("tests/engine/test_red_team.py", "-k", "lazy_output_dir_empty_or_null"),
    ),
    Mutant(
        "rt_checkpoint_entries",
        "weights whose 'model' holds no tensors are a WeightsError",
        "projects/defeat/checkpoint.py",
        "bad = next(((k, v) for k, v in model.items() if not isinstance(v, (torch.Tensor, np.ndarray))), None)",
        "bad = None",
        ("tests/engine/test_red_team.py", "-k", "weights_file_of_another_kind"),
    ),
    Mutant(
        "rt_checkpoint_reader",
        "a pickle Detectron2's reader chokes on is a WeightsError",
        "projects/defeat/checkpoint.py",
        "except (AttributeError, TypeError, KeyError) as e:  # Detectron2's .pkl reader on a pickle of another kind",
        "except ImportError as e:",
        ("tests/engine/test_red_team.py", "-k", "weights_file_of_another_kind"),
    ),
    Mutant(
        "rt_loaded_nothing",
        "MODEL.WEIGHTS none of whose tensors fits the model is refused",
        "projects/defeat/engine/start.py",
        "if not resumed and path and found is not None and loaded_nothing(checkpointer.model, found):",
        "if False:",
        ("tests/engine/test_red_team.py", "-k", "another_model"),
    ),
    Mutant(
        "rt_weights_folder",
        "--weights a folder is named as a folder",
        "projects/defeat/checkpoint.py",
        'if "://" not in local and os.path.isdir(local):',
        "if False:",
        ("tests/analysis/test_red_team_tools.py", "-k", "predict_weights_that_are"),
    ),
    Mutant(
        "rt_negative_box",
        "a box of negative size is a DeFeatError (one line, no traceback)",
        "projects/defeat/data/checks.py",
        'raise DataCheckError(f"dataset {dataset_name!r}: {first_invalid}{more}; fix the annotations")',
        'raise ValueError(f"dataset {dataset_name!r}: {first_invalid}{more}; fix the annotations")',
        ("tests/engine/test_red_team.py", "-k", "negative_width"),
    ),
    Mutant(
        "rt_image_folder",
        "an image that is a folder is named so",
        "projects/defeat/data/checks.py",
        '    if os.path.isdir(path):\n        return "a folder, not an image file"',
        '    if False:\n        return "a folder, not an image file"',
        ("tests/engine/test_red_team.py", "-k", "training_image_that_is"),
    ),
    Mutant(
        "rt_image_link",
        "an image that is a link to nothing is named so",
        "projects/defeat/data/checks.py",
        "    if os.path.islink(path) and not os.path.exists(path):",
        "    if False:",
        ("tests/engine/test_red_team.py", "-k", "training_image_that_is"),
    ),
    Mutant(
        "rt_flat_polygon",
        "a flat polygon is refused with the brackets it needs",
        "projects/defeat/data/coco_json.py",
        "if isinstance(segm, (list, tuple)) and segm and not all(isinstance(p, (list, tuple)) for p in segm):",
        "if False:",
        ("tests/engine/test_red_team.py", "-k", "flat_polygon"),
    ),
    Mutant(
        "rt_dropped_polygon",
        "polygons Detectron2 drops are warned (box model) or refused (mask model)",
        "projects/defeat/data/coco_json.py",
        "            dropped += 1\n",
        "            dropped += 0\n",
        ("tests/engine/test_red_team.py", "-k", "polygon_detectron2_drops"),
    ),
    Mutant(
        "rt_dataset_name",
        "dataset names empty or with = or ; are refused",
        "projects/defeat/data/datasets.py",
        'if not isinstance(name, str) or not name.strip() or any(c in name for c in "=;"):',
        "if not isinstance(name, str):",
        ("tests/engine/test_red_team.py", "-k", "register_coco_dataset"),
    ),
    Mutant(
        "rt_json_folder",
        "a folder as a dataset's json is named so",
        "projects/defeat/data/datasets.py",
        "    if os.path.isdir(json_file):\n",
        "    if False:\n",
        ("tests/engine/test_red_team.py", "-k", "register_coco_dataset"),
    ),
    Mutant(
        "rt_unregistered",
        "a dataset name nobody registered is a DatasetSpecError",
        "projects/defeat/data/datasets.py",
        "    if value not in DatasetCatalog.list():\n",
        "    if False:\n",
        ("tests/analysis/test_red_team_tools.py", "-k", "nobody_registered"),
    ),
    Mutant(
        "rt_run_counts",
        "run length, batch and periods below 1 are refused",
        "projects/defeat/engine/preflight.py",
        "if isinstance(value, bool) or not isinstance(value, int) or value < 1:",
        "if isinstance(value, bool) or not isinstance(value, int) or value < 0:",
        ("tests/engine/test_red_team.py", "-k", "run_counts"),
    ),
    Mutant(
        "rt_dataset_repeated",
        "a dataset listed twice is refused",
        "projects/defeat/engine/preflight.py",
        "repeated = sorted({str(n) for n in names if list(names).count(n) > 1})",
        "repeated = []",
        ("tests/engine/test_red_team.py", "-k", "dataset_listed_twice"),
    ),
    Mutant(
        "rt_dataset_blank",
        "an empty dataset name among others is refused",
        "projects/defeat/engine/preflight.py",
        "blank = [n for n in names if not str(n).strip()]",
        "blank = []",
        ("tests/engine/test_red_team.py", "-k", "dataset_listed_twice"),
    ),
    Mutant(
        "rt_builtin_hint",
        "a builtin dataset without its files names DETECTRON2_DATASETS",
        "projects/defeat/engine/preflight.py",
        "if under_root and not os.path.isfile(str(json_file)):",
        "if False:",
        ("tests/engine/test_red_team.py", "-k", "builtin_dataset"),
    ),
    Mutant(
        "rt_device_name",
        "a device name torch cannot read is refused",
        "projects/defeat/engine/machine.py",
        'return "not a device name torch reads (cpu, cuda or cuda:N, lowercase)"',
        "return None",
        (
            "tests/engine/test_red_team.py",
            "tests/analysis/test_red_team_tools.py",
            "-k",
            "device_name or step_time_device",
        ),
    ),
    Mutant(
        "rt_launch_options",
        "--machine-rank outside 0..N-1 is refused",
        "projects/defeat/engine/arguments.py",
        "if not 0 <= args.machine_rank < args.num_machines:",
        "if args.machine_rank < 0:",
        ("tests/engine/test_red_team.py", "-k", "process_counts"),
    ),
    Mutant(
        "rt_resume_numbered",
        "--resume names the numbered checkpoint it resumes from",
        "projects/defeat/engine/outputs.py",
        'if "last_checkpoint" not in present and numbered:',
        "if False:",
        ("tests/engine/test_red_team.py", "-k", "resume_without_last"),
    ),
    Mutant(
        "rt_script_kind",
        "a config of the other kind names the script that trains it",
        "projects/defeat/config/files.py",
        "if os.path.isfile(path) and file_is_lazy(path) != lazy:",
        "if False:",
        ("tests/engine/test_red_team.py", "-k", "given_to or saved_config"),
    ),
    Mutant(
        "rt_saved_config",
        "a LazyConfig run's saved config.yaml is told by its top-level keys",
        "projects/defeat/config/files.py",
        'return "model" in top and "MODEL" not in top',
        "return False",
        ("tests/engine/test_red_team.py", "-k", "saved_config"),
    ),
    Mutant(
        "rt_empty_yaml",
        "an empty YAML config is named so",
        "projects/defeat/config/files.py",
        "    if _empty_yaml(path):\n",
        "    if False:\n",
        ("tests/engine/test_red_team.py", "-k", "empty_yaml"),
    ),
    Mutant(
        "rt_config_folder",
        "a folder as --config-file is named so",
        "projects/defeat/config/paths.py",
        '    if os.path.isdir(path):\n        raise ConfigFileError(f"config file {path!r} is a folder',
        '    if False:\n        raise ConfigFileError(f"config file {path!r} is a folder',
        ("tests/engine/test_red_team.py", "-k", "empty_yaml"),
    ),
    Mutant(
        "rt_type_mismatch",
        "a YAML value of another type says how to write it",
        "projects/defeat/config/files.py",
        "m = _MISMATCH.search(str(error))",
        "m = None",
        ("tests/engine/test_red_team.py", "-k", "another_type or whole_number"),
    ),
    Mutant(
        "rt_add_defeat_frozen",
        "add_defeat_config on a frozen config says so",
        "projects/defeat/config/defaults.py",
        "    if cfg.is_frozen():\n",
        "    if False:\n",
        ("tests/engine/test_red_team.py", "-k", "add_defeat_config_on"),
    ),
    Mutant(
        "rt_add_defeat_type",
        "add_defeat_config on a LazyConfig or None says what it takes",
        "projects/defeat/config/defaults.py",
        'if not isinstance(cfg, CN) or "MODEL" not in cfg:',
        "if cfg is None:",
        ("tests/engine/test_red_team.py", "-k", "add_defeat_config_on"),
    ),
    Mutant(
        "rt_add_defeat_keep",
        "add_defeat_config twice keeps the values set between",
        "projects/defeat/config/defaults.py",
        "defeat.merge_from_other_cfg(cfg.MODEL.DEFEAT)",
        "pass",
        ("tests/engine/test_red_team.py", "-k", "add_defeat_config_twice"),
    ),
    Mutant(
        "rt_numpy_bool",
        "numpy booleans pass the settings gate",
        "projects/defeat/config/validation.py",
        "if isinstance(value, np.bool_):",
        "if False:",
        ("tests/engine/test_red_team.py", "-k", "numpy_scalars"),
    ),
    Mutant(
        "rt_input_folder",
        "a folder given as a tool's input file is named so",
        "projects/defeat/analysis/cli.py",
        '    if os.path.isdir(path):\n        return f"{what} {path!r} is a folder',
        '    if False:\n        return f"{what} {path!r} is a folder',
        ("tests/analysis/test_red_team_tools.py", "-k", "folder_given_as or run_arguments"),
    ),
    Mutant(
        "rt_run_score",
        "python -m defeat run refuses --score-threshold outside 0-1",
        "projects/defeat/demo/pipeline.py",
        "if not 0.0 <= args.score_threshold <= 1.0:",
        "if False:",
        ("tests/analysis/test_red_team_tools.py", "-k", "run_arguments"),
    ),
    Mutant(
        "rt_run_scale_base",
        "python -m defeat run refuses a non-finite --scale-base",
        "projects/defeat/demo/pipeline.py",
        "not 0 < args.scale_base < math.inf:",
        "not 0 < args.scale_base:",
        ("tests/analysis/test_red_team_tools.py", "-k", "run_arguments"),
    ),
    Mutant(
        "rt_run_per_run_keys",
        "python -m defeat run refuses overrides of the keys it sets per run",
        "projects/defeat/demo/pipeline.py",
        '        if key in SET_PER_RUN:\n            p.error(f"the override',
        '        if key in ():\n            p.error(f"the override',
        ("tests/analysis/test_red_team_tools.py", "-k", "run_arguments"),
    ),
    Mutant(
        "rt_run_teacher_defeat",
        "python -m defeat run refuses a DeFeat config as the teacher",
        "projects/defeat/demo/pipeline.py",
        "        if is_defeat_config(teacher_cfg):\n",
        "        if False:\n",
        ("tests/analysis/test_red_team_tools.py", "-k", "defeat_config_as_the_teacher"),
    ),
    Mutant(
        "rt_demo_iters",
        "the demo refuses iterations below 1",
        "projects/defeat/demo/pipeline.py",
        'p.add_argument("--teacher-iters", type=at_least(1)',
        'p.add_argument("--teacher-iters", type=int',
        ("tests/analysis/test_red_team_tools.py", "-k", "demo_iterations"),
    ),
    Mutant(
        "rt_demo_output",
        "the demo refuses an --output that cannot be a folder",
        "projects/defeat/demo/pipeline.py",
        "    if os.path.exists(output) and not os.path.isdir(output):\n",
        "    if False:\n",
        ("tests/analysis/test_red_team_tools.py", "-k", "demo_iterations"),
    ),
    Mutant(
        "rt_accuracy_tag",
        "accuracy.py refuses a --tag with a path separator",
        "benchmarks/accuracy.py",
        'if os.sep in args.tag or args.tag in (".", ".."):',
        "if False:",
        ("tests/analysis/test_red_team_tools.py", "-k", "accuracy_arguments"),
    ),
    Mutant(
        "rt_accuracy_opts",
        "accuracy.py refuses --opts of the keys each run sets",
        "benchmarks/accuracy.py",
        '        if key in SET_PER_RUN:\n            p.error(f"--opts {key}',
        '        if key in ():\n            p.error(f"--opts {key}',
        ("tests/analysis/test_red_team_tools.py", "-k", "accuracy_arguments"),
    ),
    Mutant(
        "rt_step_time_device",
        "step_time.py refuses a --device it cannot use",
        "benchmarks/step_time.py",
        "problem = device_problem(args.device)",
        "problem = None",
        ("tests/analysis/test_red_team_tools.py", "-k", "step_time_device"),
    ),
    Mutant(
        "teacher_ap_checkpoint_read_twice",
        "the engine logs the teacher's AP from the iteration build_teacher read, without loading its weights again",
        "projects/defeat/engine/start.py",
        'teacher_ap_line(weights, getattr(teacher, "teacher_iteration", None))',
        "teacher_ap_line(weights, None)",
        ("tests/modeling/test_teacher_quality.py", "-k", "engine_logs_its_ap"),
    ),
    Mutant(
        "accuracy_students_config_schedule",
        "accuracy.py trains the students as long as their teacher by default",
        "benchmarks/accuracy.py",
        "    if args.iters == TEACHER_SCHEDULE:\n        n, source = teacher_schedule(args, common)",
        "    if args.iters == TEACHER_SCHEDULE:\n        n, source = max_iter(args.defeat, common), ''",
        ("tests/demo/test_benchmarks.py", "-k", "schedule_iters_names"),
    ),
    Mutant(
        "accuracy_teacher_run_schedule_ignored",
        "the teacher's schedule is the one its run saved beside its weights",
        "benchmarks/accuracy.py",
        "        if fields is not None and fields.max_iter:",
        "        if False:",
        ("tests/demo/test_benchmarks.py", "-k", "schedule_iters_names"),
    ),
]


def _pairs(m: Mutant) -> List[Tuple[str, str]]:
    """``(old, new)`` text pairs of ``m``, in the order they are applied."""
    if isinstance(m.old, tuple) or isinstance(m.new, tuple):
        if not (isinstance(m.old, tuple) and isinstance(m.new, tuple) and len(m.old) == len(m.new)):
            raise ValueError("old and new must both be texts or tuples of the same length")
        return list(zip(m.old, m.new))
    return [(m.old, m.new)]


def mutate(text: str, m: Mutant) -> str:
    """``text`` (the contents of ``m.path``) with each old text of ``m`` replaced by its new one.

    Raises:
        ValueError: an old text that does not occur exactly once (in the text as mutated so far),
            is empty, or equals its new text (a mutant that changes nothing).
    """
    for old, new in _pairs(m):
        if not isinstance(old, str) or not isinstance(new, str) or not old:
            raise ValueError(f"old and new must be texts, old non-empty: {old!r} -> {new!r}")
        if old == new:
            raise ValueError(f"its new text equals the old one: {old!r}")
        if text.count(old) != 1:
            raise ValueError(f"the text to mutate occurs {text.count(old)} times in {m.path}: {old!r}")
        text = text.replace(old, new)
    return text


def _is_path(arg: str) -> bool:
    return arg.startswith("tests/") or arg.split("::")[0].endswith(".py")


def _literal(node: ast.AST) -> bool:
    """Whether ``node`` is a constant or a list/tuple of literals (a parametrize id known statically)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_literal(e) for e in node.elts)
    return isinstance(node, ast.Constant)


def _decorator_keywords(func: ast.AST) -> Tuple[Set[str], bool]:
    """Marker names (``@pytest.mark.NAME``), parametrize argument names and the string constants of
    a test's decorators (parametrize values and ids: parts of its test ids), and whether some
    parametrize ids are only known when the module runs (values or ``ids`` computed)."""
    found, dynamic = set(), False
    for dec in getattr(func, "decorator_list", []):
        for node in ast.walk(dec):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
                found.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
        call = dec if isinstance(dec, ast.Call) else None
        if call is not None and isinstance(call.func, ast.Attribute) and call.func.attr == "parametrize":
            values = call.args[1] if len(call.args) > 1 else None
            ids = next((k.value for k in call.keywords if k.arg == "ids"), None)
            computed = (ids is not None and not _literal(ids)) or (values is not None and not _literal(values))
            dynamic = dynamic or computed
    return found, dynamic


class KeywordSet(NamedTuple):
    """What ``-k`` matches one test against: ``names`` (its function name, class, module file name,
    markers, parametrize values) and, when its parametrize ids are computed at run time, ``source``
    (the text of its file, standing in for those ids); else ``source`` is empty."""

    names: Set[str]
    source: str

    def matches(self, word: str) -> bool:
        """pytest's rule: a case-insensitive substring of one of the names (or of the source)."""
        word = word.lower()
        return any(word in n.lower() for n in self.names) or word in self.source.lower()


def keywords_of_tests(path: str) -> Dict[str, KeywordSet]:
    """The tests of the file ``path`` as ``{node id below the file: KeywordSet}``. Raises
    OSError/SyntaxError as ``open`` and ``ast.parse`` do."""
    with open(path) as f:
        source = f.read()
    tree = ast.parse(source, path)
    module = os.path.basename(path)
    found = {}

    def visit(body, parents):
        for node in body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                visit(node.body, parents + [node])
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                names, dynamic = _decorator_keywords(node)
                names |= {module, node.name}
                for parent in parents:
                    more, also = _decorator_keywords(parent)
                    names |= {parent.name} | more
                    dynamic = dynamic or also
                node_id = "::".join([p.name for p in parents] + [node.name])
                found[node_id] = KeywordSet(names, source if dynamic else "")

    visit(tree.body, [])
    return found


_K_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_K_OPERATORS = ("(", ")", "and", "or", "not")


def _k_selects(expression: str, keywords: Sequence[KeywordSet]) -> Tuple[List[str], bool]:
    """The words of a ``-k`` expression that match no test of ``keywords``, and whether the
    expression selects at least one of them. Raises ValueError for an expression that is not
    and/or/not of words."""
    tokens = _K_TOKEN.findall(expression)
    words = [t for t in tokens if t not in _K_OPERATORS]
    unmatched = [w for w in words if not any(k.matches(w) for k in keywords)]
    selected = False
    for k in keywords:
        python = " ".join(t if t in _K_OPERATORS else str(k.matches(t)) for t in tokens)
        try:
            value = eval(python, {"__builtins__": {}}, {})  # only True/False/and/or/not/parentheses
        except SyntaxError as e:
            raise ValueError(f"-k {expression!r} is not an expression of words with and/or/not") from e
        selected = selected or bool(value)
    return unmatched, selected


def _test_problems(m: Mutant, repo: str) -> List[str]:
    """What is stale in the test arguments of ``m`` (files, ``::`` tests, ``-k`` expressions)."""
    out = []
    files = [a for a in m.tests if _is_path(a)]
    if not files:
        return [f"{m.name}: its test arguments name no test file: {m.tests}"]
    keywords: List[KeywordSet] = []
    for arg in files:
        path, *node = arg.split("::")
        full = os.path.join(repo, path)
        if not os.path.isfile(full):
            out.append(f"{m.name}: test file {path} does not exist")
            continue
        try:
            tests = keywords_of_tests(full)
        except (OSError, SyntaxError) as e:
            out.append(f"{m.name}: cannot read test file {path}: {e}")
            continue
        if node:
            wanted = "::".join(n.split("[")[0] for n in node)
            chosen = {k: v for k, v in tests.items() if k == wanted or k.startswith(wanted + "::")}
            if not chosen:
                out.append(f"{m.name}: {path} has no test {wanted}")
            tests = chosen
        keywords.extend(tests.values())
    args = list(m.tests)
    for i, arg in enumerate(args):
        if arg != "-k":
            continue
        if i + 1 >= len(args):
            out.append(f"{m.name}: -k without an expression")
            continue
        try:
            unmatched, selected = _k_selects(args[i + 1], keywords)
        except ValueError as e:
            out.append(f"{m.name}: {e}")
            continue
        if unmatched:
            out.append(f"{m.name}: -k {args[i + 1]!r}: {unmatched} name no test of {files}")
        elif not selected:
            out.append(f"{m.name}: -k {args[i + 1]!r} selects no test of {files}")
    return out


def problems(mutants: Optional[Sequence[Mutant]] = None, repo: Optional[str] = None) -> List[str]:
    """Every way in which ``mutants`` (default: :data:`MUTANTS`) no longer fit the sources under
    ``repo`` (default: this repository), one line each (empty: all current): duplicate names, a
    file that is gone, an old text that does not occur exactly once or equals its new text, a test
    file or ``::`` test that is gone, a ``-k`` word that names no test of the mutant's test files."""
    mutants = MUTANTS if mutants is None else mutants
    repo = REPO if repo is None else repo
    out = []
    seen: Set[str] = set()
    for m in mutants:
        if m.name in seen:
            out.append(f"{m.name}: two mutants have this name")
        seen.add(m.name)
        path = os.path.join(repo, m.path)
        if not os.path.isfile(path):
            out.append(f"{m.name}: {m.path} does not exist")
        else:
            with open(path) as f:
                text = f.read()
            try:
                mutate(text, m)
            except ValueError as e:
                out.append(f"{m.name}: {e}")
        out.extend(_test_problems(m, repo))
    return out


def _run_tests(copy: str, tests, timeout: int) -> Tuple[bool, str]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([os.path.join(copy, "projects"), copy]),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, "timed out (counted as killed)"
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED tests/", "ERROR tests/"))]
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-300:]
    # 5: no test collected; 4: a usage error (a test file not found, a bad -k), unless the package no
    # longer imports (the conftest imports it): neither is a failing test
    if proc.returncode == 5 or (proc.returncode == 4 and "ImportError while loading conftest" not in proc.stderr):
        return False, f"no test ran (pytest exit status {proc.returncode}): {summary}"
    return proc.returncode != 0, (failed[0] if failed else summary)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="mutants to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutants (stale ones marked) and exit")
    p.add_argument("--check", action="store_true", help="report stale mutants without running any (exit 1 if any)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per mutant's tests")
    args = p.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        p.error(f"unknown mutants {unknown}; see --list")
    chosen = [known[n] for n in args.names] if args.names else MUTANTS
    stale = problems()
    if args.list:
        for m in MUTANTS:
            mark = "STALE " if any(line.startswith(f"{m.name}: ") for line in stale) else ""
            print(f"{mark}{m.name:28s} {m.promise}  [{m.path}; {' '.join(m.tests)}]")
    if args.list or args.check:
        print("\n".join(stale) if stale else f"all {len(MUTANTS)} mutants apply to the current sources")
        return 1 if stale else 0
    survivors = []
    with tempfile.TemporaryDirectory(prefix="defeat-mutants-") as tmp:
        copy = os.path.join(tmp, "repo")
        subprocess.run(["git", "worktree", "add", "--detach", copy, "HEAD"], cwd=REPO, check=True, capture_output=True)
        try:
            stale = problems(chosen, repo=copy)  # against the committed sources that are mutated
            if stale:
                raise SystemExit("stale mutants (fix tests/mutants.py; commit first):\n" + "\n".join(stale))
            for m in chosen:
                path = os.path.join(copy, m.path)
                with open(path) as f:
                    original = f.read()
                mutated = mutate(original, m)
                with open(path, "w") as f:
                    f.write(mutated)
                t0 = time.time()
                try:
                    killed, detail = _run_tests(copy, m.tests, args.timeout)
                finally:
                    with open(path, "w") as f:
                        f.write(original)
                print(
                    f"{'killed ' if killed else 'SURVIVED'} {m.name:28s} {time.time() - t0:5.0f}s  {detail}", flush=True
                )
                if not killed:
                    survivors.append(m.name)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", copy], cwd=REPO, capture_output=True)
    print(
        f"{len(chosen) - len(survivors)} of {len(chosen)} mutants killed"
        + (f"; survivors: {survivors}" if survivors else "")
    )
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
