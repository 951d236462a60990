"""DeFeat for any ``GeneralizedRCNN`` subclass: a mixin that adds the teacher and the KD losses.

A user architecture mixes it in *before* its Detectron2 parent and keeps its own ``forward``::

    class MyRCNN(DeFeatMixin, GeneralizedRCNN):
        def forward(self, batched_inputs):
            ...                                            # student backbone, RPN as usual
            teacher = self.defeat_teacher(batched_inputs, images, gt_instances)
            sampled, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
            losses.update(self.defeat_losses(features, gt_instances, teacher, sampled))

The mixin's ``__init__``/``from_config`` take ``teacher`` and the ``defeat`` settings (built
from ``MODEL.DEFEAT``, or given by a LazyConfig), build the distiller, and hand every other
argument to the parent, so a subclass needs no constructor of its own. ``DeFeatRCNN`` is this
mixin plus a forward that saves one student box-head pass (see ``box_tap``); the losses are the
same (docs/extending.md).
"""

from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from detectron2.config import configurable
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ...config.settings import resolve_settings
from ...config.validation import PROPOSAL_MODES
from ..distiller import DeFeatDistiller
from .box_heads import box_transforms, check_cross_head_levels, check_head_pair, stage_logits, stage_outputs
from .box_kd import roi_box_terms
from .common import TeacherMixin, check_teacher_family, defeat_from_config, prediction_terms, turn_off

__all__ = ["DeFeatMixin", "PROPOSAL_MODES", "box_head_logits"]


def box_head_logits(roi_heads, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
    """Classification logits ``[R, K+1]`` of a single-stage (``StandardROIHeads``) box head on
    given boxes; :func:`defeat.modeling.meta_arch.box_heads.stage_logits` gives every cascade stage's."""
    logits = stage_logits(roi_heads, features, boxes)
    if len(logits) != 1:
        raise ValueError(f"{type(roi_heads).__name__} has {len(logits)} classifier stages: use stage_logits")
    return logits[0]


def _scaled_boxes(boxes: Boxes, scale: float) -> Boxes:
    """``boxes`` times ``scale`` (a new ``Boxes``; the same object at 1)."""
    return boxes if scale == 1.0 else Boxes(boxes.tensor * scale)


def _scaled(inst: Instances, scale: float, image_size) -> Instances:
    """GT instances (``gt_boxes``, ``gt_classes``) or sampled RoIs (``proposal_boxes``,
    ``gt_classes``) with their boxes scaled into another frame of size ``image_size``."""
    out = Instances(tuple(image_size))
    for name in ("gt_boxes", "proposal_boxes"):
        if inst.has(name):
            out.set(name, _scaled_boxes(inst.get(name), scale))
    out.gt_classes = inst.gt_classes
    return out


def _stage_mean(per_stage: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Key-wise mean of per-stage loss dicts (a single stage is returned as is)."""
    if len(per_stage) == 1:
        return per_stage[0]
    return {k: sum(d[k] for d in per_stage) / len(per_stage) for k in per_stage[0]}


def _as_list(x):
    """A single stage's tensor as a one-element list; lists and None as they are."""
    return [x] if isinstance(x, torch.Tensor) else x


class DeFeatMixin(TeacherMixin):
    """Frozen hidden teacher + ``distiller`` + the two calls that give DeFeat's losses.

    For ``GeneralizedRCNN`` subclasses (uses ``backbone``, ``roi_heads``, ``preprocess_image``).
    State added to the student: ``distiller.adapters.*`` only.
    """

    @configurable
    def __init__(self, *, teacher: nn.Module, defeat: Optional[Mapping] = None, **kwargs):
        """
        Args:
            teacher: a trained detector (e.g. from ``defeat.build_teacher``, which a LazyConfig
                calls with ``LazyCall``), kept frozen and out of ``state_dict``: a ``GeneralizedRCNN``,
                or any detector with an FPN ``backbone`` for the neck loss alone (e.g. RetinaNet).
            defeat: DeFeat settings, nested and lowercase (``neck.bg_weight``, ``head.proposals``,
                ..., see ``defeat.config.settings``); missing ones take their defaults. The distiller
                is built from them and the two backbones' output shapes.
            kwargs: arguments of the parent architecture (e.g. ``GeneralizedRCNN``).
        """
        super().__init__(**kwargs)
        settings = resolve_settings(defeat)  # type- and range-checked
        terms = prediction_terms(settings)
        self._set_teacher(teacher, settings["teacher_input_scale"], terms)
        cross = check_teacher_family(GeneralizedRCNN, teacher, terms)
        self.distiller = DeFeatDistiller.from_settings(
            settings, self.backbone.output_shape(), teacher.backbone.output_shape(), shared_levels_only=cross
        )
        self._set_inheritance(settings["inherit"])
        self.head_proposals = settings["head"]["proposals"]
        self.head_rois_per_image = settings["head"]["rois_per_image"]  # 0: the teacher's own count
        if terms:
            check_head_pair(self.roi_heads, teacher.roi_heads, turn_off(terms))
        if self.distiller.cross_enabled:
            check_cross_head_levels(self.distiller, teacher.roi_heads)

    @classmethod
    def from_config(cls, cfg):
        return {**super().from_config(cfg), **defeat_from_config(cfg)}

    @property
    def head_on_teacher_rois(self) -> bool:
        """True when the head or box loss is on and uses the teacher's sampled RoIs."""
        return self.distiller.prediction_enabled and self.head_proposals == "teacher"

    def defeat_teacher(self, batched_inputs: List[Dict], images, gt_instances: List[Instances]) -> Dict:
        """Everything the teacher contributes to one batch, computed once and without autograd.

        Args:
            batched_inputs: the student's inputs (the teacher re-reads images only if its
                preprocessing differs); images: the student's ``ImageList``.
        Returns:
            ``features`` (teacher FPN maps by name) and, for the head or box loss on teacher
            RoIs, ``rois`` (sampled, labelled ``Instances`` per image, student frame) and their
            ``logits``: one ``[R, K+1]`` tensor per classifier stage (one for
            ``StandardROIHeads``), and for the box loss ``boxes``: per stage the teacher's
            decoded ``[R, 4K]`` (or ``[R, 4]``) boxes in the student's frame; ``None`` where not
            needed.
        """
        out = {"rois": None, "logits": None, "boxes": None}
        t_images, out["features"] = self.teacher_features(batched_inputs, images)
        with torch.no_grad():
            if self.head_on_teacher_rois:
                scale = self.teacher_input_scale
                t_gt = (
                    gt_instances
                    if scale == 1.0
                    else [_scaled(g, scale, s) for g, s in zip(gt_instances, t_images.image_sizes)]
                )
                rois = self.teacher_rois(t_images, out["features"], t_gt)
                out["logits"], out["boxes"] = self._teacher_predictions([r.proposal_boxes for r in rois], out)
                # In the student's frame: the student's box head reads the same boxes there.
                out["rois"] = (
                    rois if scale == 1.0 else [_scaled(r, 1.0 / scale, s) for r, s in zip(rois, images.image_sizes)]
                )
        return out

    def _teacher_predictions(self, t_boxes: List[Boxes], teacher: Dict):
        """The teacher's per-stage logits on ``t_boxes`` (its frame) and, with the box loss on,
        its decoded boxes per stage scaled into the student's frame (else ``None``)."""
        outs = stage_outputs(self.teacher.roi_heads, teacher["features"], t_boxes)
        logits = [o[0] for o in outs]
        if not self.distiller.box_enabled:
            return logits, None
        rois = Boxes.cat(t_boxes).tensor
        transforms = box_transforms(self.teacher.roi_heads)
        boxes = [tf.apply_deltas(o[1], rois) / self.teacher_input_scale for tf, o in zip(transforms, outs)]
        return logits, boxes

    def defeat_losses(
        self,
        features: Dict[str, torch.Tensor],
        gt_instances: Sequence[Instances],
        teacher: Dict,
        sampled: Optional[List[Instances]] = None,
        student_logits: Optional[Union[torch.Tensor, List[torch.Tensor]]] = None,
        student_deltas: Optional[Union[torch.Tensor, List[torch.Tensor]]] = None,
    ) -> Dict[str, torch.Tensor]:
        """The weighted, scheduled ``loss_defeat_*`` of one batch (only the enabled terms).

        Args:
            features: the student's backbone outputs (with autograd).
            gt_instances: the student's ground truth (its frame).
            teacher: :meth:`defeat_teacher`'s result for the same batch.
            sampled: the RoIs the student's ROI heads sampled (first output of ``roi_heads`` in
                training); needed only for ``HEAD.PROPOSALS: student``.
            student_logits: the student's ``[R, K+1]`` logits on the head loss's RoIs if already
                computed (a list of them, one per stage, for a cascade); otherwise the student's
                box head(s) run on them here. Cascade stage ``k`` is compared with the teacher's
                stage ``k`` and the losses are averaged over stages.
            student_deltas: likewise the student's box deltas on those RoIs, for the box loss
                (when it is on and they are not given, the box head(s) run here).

        The cross-head loss runs the teacher's box head(s) on the same RoIs over the student's
        adapted maps (:meth:`DeFeatDistiller.adapt`), with autograd, and pairs stage ``k`` with
        the teacher's own stage ``k`` as the head loss does.
        """
        d = self.distiller
        losses = {}
        adapted = d.adapt(features) if d.neck_enabled else None  # shared by the neck and cross-head losses
        if d.neck_enabled:
            boxes = [g.gt_boxes.tensor for g in gt_instances]
            losses.update(d.neck_losses(features, teacher["features"], boxes, self.teacher_input_scale, adapted))
        if not d.prediction_enabled:
            return d.scheduled(losses)
        if self.head_proposals == "teacher":
            rois, t_logits, t_boxes = teacher["rois"], teacher["logits"], teacher["boxes"]
        else:
            if sampled is None:
                raise ValueError("HEAD.PROPOSALS is 'student': pass the RoIs roi_heads sampled as `sampled`")
            rois = sampled
            with torch.no_grad():
                scaled = [_scaled_boxes(r.proposal_boxes, self.teacher_input_scale) for r in rois]
                t_logits, t_boxes = self._teacher_predictions(scaled, teacher)
        missing = student_logits is None or (d.box_enabled and student_deltas is None)
        if d.student_predictions_needed and missing:
            outs = stage_outputs(self.roi_heads, features, [r.proposal_boxes for r in rois])
            student_logits, student_deltas = [o[0] for o in outs], [o[1] for o in outs]
        student_logits, student_deltas = _as_list(student_logits), _as_list(student_deltas)
        labels = torch.cat([r.gt_classes for r in rois])
        k = self.roi_heads.num_classes
        is_object = (labels >= 0) & (labels < k)
        if d.cross_enabled:
            cross = stage_logits(self.teacher.roi_heads, adapted, [r.proposal_boxes for r in rois])
            losses.update(_stage_mean([d.cross_losses(c, t, is_object) for c, t in zip(cross, t_logits)]))
        if d.head_enabled:
            losses.update(_stage_mean([d.head_losses(s, t, is_object) for s, t in zip(student_logits, t_logits)]))
        if d.box_enabled:
            roi_boxes = Boxes.cat([r.proposal_boxes for r in rois]).tensor
            per_stage = [
                d.box_losses(*roi_box_terms(s, tb, tl, roi_boxes, labels, k, tf, d.box_loss), per_entry=True)
                for s, tb, tl, tf in zip(student_deltas, t_boxes, t_logits, box_transforms(self.roi_heads))
            ]
            losses.update(_stage_mean(per_stage))
        return d.scheduled(losses)

    def teacher_rois(self, t_images, t_features, gt_instances) -> List[Instances]:
        """Teacher RPN proposals, labelled and sampled by the teacher's ROI heads (GT appended):
        ``HEAD.ROIS_PER_IMAGE`` per image when set (with the teacher's foreground fraction),
        else the teacher's own ``BATCH_SIZE_PER_IMAGE``."""
        t = self.teacher
        proposals, _ = t.proposal_generator(t_images, t_features, None)
        heads, own = t.roi_heads, t.roi_heads.batch_size_per_image
        heads.batch_size_per_image = self.head_rois_per_image or own
        try:
            with EventStorage():  # keep the teacher's sampling statistics out of the student's metrics
                return heads.label_and_sample_proposals(proposals, gt_instances)
        finally:
            heads.batch_size_per_image = own
