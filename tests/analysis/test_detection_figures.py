"""defeat.analysis.detection_figures: one colour per class, labels sized to the image and kept
inside it, ground truth dashed."""

import cv2
import numpy as np
import pytest

from defeat.analysis.detection_figures import (
    PALETTE,
    TEXT_HEIGHT_SHARE,
    class_color,
    draw_detections,
    label_box,
    label_style,
)

GREY = 90


def _image(height, width):
    return np.full((height, width, 3), GREY, np.uint8)


def _edge_color(drawn, box):
    """The colour on the middle of the box's left edge (away from any label)."""
    x1, y1, _, y2 = box
    return tuple(int(v) for v in drawn[(y1 + y2) // 2, x1])


def test_a_class_has_one_colour_in_every_image_and_classes_differ():
    first = draw_detections(_image(120, 160), np.array([[20, 40, 90, 110]]), [3], [0.9], ["a", "b", "c", "d", "e"])
    second = draw_detections(
        _image(480, 640), np.array([[300, 200, 500, 400], [40, 200, 200, 400]]), [4, 3], [0.5, 0.7]
    )
    assert _edge_color(first, (20, 40, 90, 110)) == class_color(3) == PALETTE[3]
    assert _edge_color(second, (40, 200, 200, 400)) == class_color(3)
    assert _edge_color(second, (300, 200, 500, 400)) == class_color(4) != class_color(3)
    # Beyond the palette too: stable and distinct for many classes.
    colors = [class_color(i) for i in range(80)]
    assert colors == [class_color(i) for i in range(80)] and len(set(colors)) == 80
    with pytest.raises(ValueError, match="class index must be >= 0"):
        class_color(-1)


@pytest.mark.parametrize("size", [(64, 64), (480, 640), (3000, 4000)])
def test_labels_are_sized_to_the_image_and_stay_inside_it(size):
    height, width = size
    style = label_style(height, width)
    (_, text_height), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, style.font_scale, style.thickness)
    expected = max(9, TEXT_HEIGHT_SHARE * min(size))
    assert abs(text_height - expected) <= 0.2 * expected + 2  # readable at any size: ~2.2% of the short side
    label = (int(width * 0.3), text_height + 6)
    boxes = [
        (0, 0, width / 4, height / 4),  # top-left corner: no room above, inside the box
        (width - 5, height - 5, width, height),  # bottom-right corner: moved left
        (-50, -50, width + 50, height + 50),  # a box beyond the image
        (width / 3, height / 2, width / 2, height * 0.7),  # room above: the label sits on the box
    ]
    for box in boxes:
        x1, y1, x2, y2 = label_box(box, label, (height, width))
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (box, (x1, y1, x2, y2))
    assert label_box(boxes[3], label, (height, width))[3] == round(height / 2)  # its bottom on the box's top
    assert label_box(boxes[0], label, (height, width))[1] == 0  # inside the box, at its top
    huge = label_box((10, 10, 20, 20), (width * 3, height * 3), (height, width))
    assert huge == (0, 0, width, height)  # larger than the image: cut to it


def test_drawn_labels_lie_inside_the_image():
    """The label of a box in the bottom-right corner, drawn: its background (the class colour,
    filled) is inside the image and left of the corner, not cut off."""
    height, width = 200, 300
    names = ["a", "b", "class two"]
    drawn = draw_detections(_image(height, width), np.array([[280, 185, 300, 200]]), [2], [0.5], names)
    filled = np.all(drawn == np.array(class_color(2), np.uint8), axis=2)
    ys, xs = np.nonzero(filled)
    style = label_style(height, width)
    (text_w, _), _ = cv2.getTextSize("class two 50%", cv2.FONT_HERSHEY_SIMPLEX, style.font_scale, style.thickness)
    assert xs.max() == width - 1 and xs.min() <= width - text_w  # the whole label moved left into the image
    assert ys.max() <= height - 1 and ys.min() >= 0


def test_ground_truth_is_drawn_dashed_at_its_box_edges():
    image = _image(200, 300)
    pred = np.array([[10, 10, 60, 60]])
    gt = np.array([[100, 80, 260, 180]])
    without = draw_detections(image, pred, [0], [0.9])
    with_gt = draw_detections(image, pred, [0], [0.9], gt_boxes=gt, gt_classes=[1])
    changed = np.any(with_gt != without, axis=2)
    # Only pixels on (or next to) the ground-truth outline changed ...
    x1, y1, x2, y2 = gt[0]
    near = np.zeros_like(changed)
    near[y1 - 2 : y2 + 3, x1 - 2 : x2 + 3] = True
    near[y1 + 3 : y2 - 2, x1 + 3 : x2 - 2] = False
    assert changed.any() and not (changed & ~near).any()
    # ... in the class colour, dashed: along the top edge, drawn and background pixels alternate.
    top = with_gt[y1, x1 : x2 + 1]
    drawn = np.all(top == np.array(class_color(1), np.uint8), axis=1)
    background = np.all(top == GREY, axis=1)
    assert drawn.sum() > 0.3 * len(top) and background.sum() > 0.2 * len(top)
    for edge in (changed[y1 : y2 + 1, x1], changed[y1 : y2 + 1, x2], changed[y2, x1 : x2 + 1]):
        assert 0.3 < edge.mean() < 0.7  # every side drawn, dashed


def test_masks_are_tinted_in_their_class_colour():
    image = _image(100, 100)
    mask = np.zeros((1, 100, 100), bool)
    mask[0, 40:60, 40:60] = True
    drawn = draw_detections(image, np.array([[30, 30, 70, 70]]), [5], [0.8], masks=mask)
    inside = drawn[50, 50].astype(int)
    expected = (GREY * 0.6 + np.array(class_color(5)) * 0.4).astype(int)
    assert np.abs(inside - expected).max() <= 1 and (drawn[35, 35] == GREY).all()
    with pytest.raises(ValueError, match="2 boxes but 1 classes"):
        draw_detections(image, np.zeros((2, 4)), [1])
