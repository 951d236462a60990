"""Procedural shape-detection dataset written in COCO format (numpy + OpenCV only).

Every image is ``image_size x image_size`` RGB (stored as lossless PNG) and holds 1-6
objects from up to 10 classes that differ in *shape*; each class also has a hue
(``360 * k / K`` degrees, +- ``HUE_JITTER``), and neighbouring classes' hues overlap, so
colour narrows the class to two or three candidates and shape decides (a problem that a
small detector learns in minutes on a CPU, with room for a bigger one to do better).  Backgrounds are cluttered:
a two-colour gradient, low-frequency texture, thin random lines and curves, and
amorphous blobs that belong to no class, plus per-pixel sensor noise on top.

Annotation conventions (fixed, documented):

* Objects are painted in order, later ones over earlier ones.  A placement that would
  leave any earlier object less than ``1 - max_occlusion`` visible (or that would
  itself be smaller than ``MIN_VISIBLE_PIXELS``) is rejected and retried elsewhere,
  so every painted object is annotated and no annotation is more than
  ``max_occlusion`` occluded.
* ``bbox`` is ``[x, y, w, h]`` in integer pixels, tight around the *visible* pixels
  (alpha >= 0.5) of the object, like COCO's boxes; it is always inside the image.
* ``area`` is the bbox area ``w * h`` in pixels^2 (there are no masks), so COCO's
  small / medium / large ranges (< 32^2, 32^2..96^2, > 96^2) apply to the box.
* Category ids are 1-based (``1..num_classes``) in ``CLASS_NAMES`` order; image ids
  are 1-based; file names are ``{index:06d}.png`` relative to the split folder.

Each image draws from its own RNG seeded with ``(seed, split, index)``, so output is
bit-identical for a seed (given the same numpy / OpenCV builds) and a smaller dataset
is a prefix of a larger one.
"""

import colorsys
import logging

import cv2
import numpy as np

from .names import (  # noqa: F401 (the generator's names, kept here too)
    CLASS_NAMES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_CLASSES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    GENERATOR_VERSION,
)

logger = logging.getLogger(__name__)


MIN_OBJECT_SIZE = 12.0  # smallest object scale sqrt(w*h) of the full shape's box, px
SMALL_MAX = 32.0  # COCO small/medium boundary on sqrt(area), px
MEDIUM_MAX = 96.0  # COCO medium/large boundary on sqrt(area), px
LARGE_PROB = 0.25  # chance that an image starts with a large object
SMALL_PROB = 0.35  # chance that any other object is small (else medium)
MAX_OBJECTS = 6
MAX_OCCLUSION = 0.4
MIN_VISIBLE_PIXELS = 10
PLACEMENT_TRIES = 12
_SPLITS = {"train": 0, "val": 1}
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly
HUE_JITTER = 30.0  # degrees of hue noise around a class's hue (classes are 36 deg apart)
_MIN_CONTRAST = 90.0  # L1 RGB distance wanted between an object and what it covers


# ----------------------------------------------------------------------------- shapes
def _regular(n, phase=0.0):
    """(n, 2) vertices of a regular n-gon with circumradius 1."""
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _rot(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _shape(name, rng):
    """Return (outer polygons, hole polygons, rotation in rad) in unit-ish coordinates.

    Polygons are (N, 2) float arrays (x, y) centred near the origin; the caller rotates,
    scales and translates them.
    """
    holes = []
    deg = np.pi / 180
    if name == "circle":
        p = _regular(48) * [1.0, rng.uniform(0.9, 1.1)]
        theta = rng.uniform(0, np.pi)
    elif name == "ring":
        inner = rng.uniform(0.55, 0.7)
        p = _regular(48)
        holes = [_regular(48) * inner]
        theta = 0.0
    elif name == "square":
        p = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [1.0, rng.uniform(0.85, 1.15)]
        theta = rng.uniform(-15, 15) * deg
    elif name == "diamond":
        p = np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]]) * [rng.uniform(0.9, 1.15), 1.0]
        theta = rng.uniform(-20, 20) * deg
    elif name == "triangle":
        p = _regular(3, -np.pi / 2) + rng.uniform(-0.08, 0.08, (3, 2))
        theta = rng.uniform(0, 2 * np.pi)
    elif name == "plus":
        t = rng.uniform(0.22, 0.32)
        p = np.array(
            [[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t]]
        )
        theta = rng.uniform(0, np.pi / 2)
    elif name == "star":
        inner = rng.uniform(0.38, 0.48)
        p = _regular(10, -np.pi / 2) * np.where(np.arange(10) % 2 == 0, 1.0, inner)[:, None]
        theta = rng.uniform(0, 2 * np.pi)
    elif name == "hexagon":
        p = _regular(6)
        theta = rng.uniform(0, np.pi / 3)
    elif name == "bar":
        p = _regular(40) * [1.0, 1.0 / rng.uniform(2.5, 4.0)]
        theta = rng.uniform(0, np.pi)
    elif name == "ell":
        t = rng.uniform(0.3, 0.42)
        p = np.array([[0, 0], [1, 0], [1, t], [t, t], [t, 1], [0, 1]], float) - 0.5
        p *= [rng.uniform(0.8, 1.2), 1.0]
        if rng.random() < 0.5:
            p[:, 0] *= -1
        theta = rng.uniform(0, 2 * np.pi)
    else:
        raise ValueError(f"unknown shape {name!r}")
    return [np.asarray(p, float)], [np.asarray(h, float) for h in holes], theta


def _fill(polys, shape):
    """Anti-aliased coverage (h, w) float32 in [0, 1] of polygons in pixel coords."""
    canvas = np.zeros(shape, np.uint8)
    pts = [np.round(p * (1 << _SHIFT)).astype(np.int32) for p in polys]
    cv2.fillPoly(canvas, pts, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return canvas.astype(np.float32) / 255.0


# ------------------------------------------------------------------------- background
def _smooth_noise(rng, shape, cells):
    """Low-frequency noise in [0, 1] of (h, w) from a (cells, cells) grid upsampled."""
    g = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _rand_color(rng):
    return rng.uniform(0, 255, 3).astype(np.float32)


def _background(rng, size):
    """Cluttered (size, size, 3) float32 background in [0, 255]."""
    ramp = np.arange(size, dtype=np.float32) / (size - 1)
    a = rng.uniform(0, 2 * np.pi)
    t = np.float32(np.cos(a)) * ramp[None, :] + np.float32(np.sin(a)) * ramp[:, None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = _rand_color(rng), _rand_color(rng)
    img = c0 + (c1 - c0) * t[..., None]
    tex = _smooth_noise(rng, (size, size), int(rng.integers(3, 9))) - 0.5
    img += tex[..., None] * rng.uniform(20, 80) * rng.uniform(0.5, 1.0, 3).astype(np.float32)

    # ragged, semi-transparent blobs (thresholded noise): never a class shape
    for _ in range(int(rng.integers(0, 3))):
        bw, bh = (int(v) for v in rng.integers(8, max(9, size // 3), 2))
        field = _smooth_noise(rng, (bh, bw), int(rng.integers(4, 8)))
        alpha = (field > np.quantile(field, rng.uniform(0.5, 0.7))).astype(np.float32)
        alpha = cv2.GaussianBlur(alpha, (3, 3), 0) * rng.uniform(0.35, 0.85)
        x0, y0 = int(rng.integers(0, size - bw + 1)), int(rng.integers(0, size - bh + 1))
        patch = img[y0 : y0 + bh, x0 : x0 + bw]
        patch += (_rand_color(rng) - patch) * alpha[..., None]

    # thin straight lines and wiggly curves
    canvas = np.ascontiguousarray(img)
    for _ in range(int(rng.integers(0, 4))):
        color = tuple(float(v) for v in _rand_color(rng))
        thick = int(rng.integers(1, 3))
        if rng.random() < 0.5:
            p0, p1 = rng.uniform(-0.2 * size, 1.2 * size, (2, 2)).astype(int)
            cv2.line(canvas, tuple(int(v) for v in p0), tuple(int(v) for v in p1), color, thick, cv2.LINE_AA)
        else:
            n = int(rng.integers(4, 10))
            steps = rng.normal(0, size / 10, (n, 2)).cumsum(axis=0)
            pts = (steps + rng.uniform(0, size, 2)).astype(np.int32)
            cv2.polylines(canvas, [pts], False, color, thick, cv2.LINE_AA)
    return canvas


# ---------------------------------------------------------------------------- objects
def _sample_scales(rng, n, size):
    """n target object scales sqrt(w*h) in px, largest-bucket first."""
    hi = 0.95 * size
    scales = []
    if rng.random() < LARGE_PROB and hi > MEDIUM_MAX:
        scales.append(rng.uniform(MEDIUM_MAX + 2, hi))
    while len(scales) < n:
        lo, up = (MIN_OBJECT_SIZE, SMALL_MAX) if rng.random() < SMALL_PROB else (SMALL_MAX, MEDIUM_MAX)
        up = min(up, hi)
        lo = min(lo, up)
        scales.append(float(np.exp(rng.uniform(np.log(lo), np.log(up)))))
    return scales


def _place(rng, name, scale, size, shape_fn=None):
    """Random pose of one shape inside the image (``shape_fn(name, rng)``: :func:`_shape`'s
    signature; default :func:`_shape`).

    Returns ``(alpha, x0, y0)``: coverage (h, w) float32 in [0, 1] of the crop whose
    top-left pixel is (x0, y0) in the image.
    """
    outer, holes, theta = (shape_fn or _shape)(name, rng)
    r = _rot(theta)
    outer = [p @ r.T for p in outer]
    holes = [p @ r.T for p in holes]
    pts = np.concatenate(outer)
    lo, hi = pts.min(0), pts.max(0)
    ext = hi - lo
    s = min(scale / np.sqrt(ext[0] * ext[1]), (size - 2) / ext.max())
    room = np.maximum(size - 1 - s * ext, 0)
    corner = rng.uniform(0, room) + 0.5  # top-left of the shape in px
    x0, y0 = (int(v) for v in np.clip(np.floor(corner) - 1, 0, size - 1))
    x1, y1 = (int(v) for v in np.clip(np.ceil(corner + s * ext) + 2, 1, size))
    off = corner - s * lo - [x0, y0]
    shape = (y1 - y0, x1 - x0)
    alpha = _fill([p * s + off for p in outer], shape)
    if holes:
        alpha *= 1.0 - _fill([p * s + off for p in holes], shape)
    return alpha, x0, y0


def _class_color(rng, cls, num_classes):
    """A colour whose hue is tied to the class: ``360 * cls / K`` +- ``HUE_JITTER`` degrees.

    Neighbouring classes' hue ranges overlap, so colour narrows the class down to two or
    three candidates and shape has to decide; saturation and value are random.
    """
    hue = (cls / num_classes + rng.uniform(-HUE_JITTER, HUE_JITTER) / 360.0) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
    return np.array(rgb, np.float32) * 255.0


def ramped_fill(rng, color, x0, y0, h, w, size):
    """(h, w, 3) float32 in [0, 255]: ``color`` (3,) with a faint random brightness ramp across the
    image (+-12.5 % at the image's edges), for the crop whose top-left pixel is (x0, y0)."""
    ramp = rng.uniform(-0.25, 0.25, 2).astype(np.float32)
    xx = np.arange(x0, x0 + w, dtype=np.float32)[None, :] / size - 0.5
    yy = np.arange(y0, y0 + h, dtype=np.float32)[:, None] / size - 0.5
    return (color * (1.0 + ramp[0] * xx + ramp[1] * yy)[..., None]).clip(0, 255)


def contrasting_color(rng, canvas, mask, sample):
    """The first of up to 8 colours ``sample(rng)`` (3,) float32 at least ``_MIN_CONTRAST`` (L1)
    from the mean of what ``mask`` covers in ``canvas``, else the farthest of them."""
    under = canvas[mask].mean(0) if mask.any() else canvas.reshape(-1, 3).mean(0)
    best, best_d = None, -1.0
    for _ in range(8):
        c = sample(rng)
        d = float(np.abs(c - under).sum())
        if d > best_d:
            best, best_d = c, d
        if d >= _MIN_CONTRAST:
            break
    return best


def _object_color(rng, canvas, mask, cls, num_classes):
    """Class-tied colour (3,) float32 contrasting with what the object covers (best of a few)."""
    return contrasting_color(rng, canvas, mask, lambda r: _class_color(r, cls, num_classes))


def paint_objects(rng, canvas, items, place, paint, max_occlusion=MAX_OCCLUSION):
    """Paint objects in order, each where it leaves every earlier one enough visible pixels.

    ``items`` yields ``(class_index, scale)`` (a generator may draw from ``rng`` as it goes: it
    is consumed one object at a time, before that object is placed); ``place(cls, scale)`` returns a random
    pose ``(alpha, x0, y0)`` (as :func:`_place`) and ``paint(region, alpha, hard, cls, x0, y0)``
    blends the object into ``region`` (a view of ``canvas``) in place.  A pose is retried up
    to ``PLACEMENT_TRIES`` times; an object that never fits is left out.

    Returns ``(owner, labels)``: owner (H, W) int16, the index into ``labels`` of the object
    on top of each pixel (-1: none); labels the class index of each painted object.
    """
    owner = np.full(canvas.shape[:2], -1, np.int16)
    full_px, visible, labels = [], [], []
    for cls, scale in items:
        for _ in range(PLACEMENT_TRIES):
            alpha, x0, y0 = place(cls, scale)
            h, w = alpha.shape
            hard = alpha >= 0.5
            npx = int(hard.sum())
            if npx < MIN_VISIBLE_PIXELS:
                continue
            under = owner[y0 : y0 + h, x0 : x0 + w]
            lost = np.bincount(under[hard] + 1, minlength=len(labels) + 1)[1:]
            left = np.asarray(visible, np.int64) - lost
            if len(labels) and np.any(left < (1 - max_occlusion) * np.asarray(full_px)):
                continue
            paint(canvas[y0 : y0 + h, x0 : x0 + w], alpha, hard, cls, x0, y0)
            under[hard] = len(labels)
            visible = list(left) + [npx]
            full_px.append(npx)
            labels.append(cls)
            break
    return owner, labels


def finish_image(rng, canvas, owner, labels):
    """Optional blur and sensor noise on ``canvas``; returns ``(image, objects)`` as
    :func:`render_image` (boxes tight around each object's visible pixels)."""
    if rng.random() < 0.3:
        canvas = cv2.GaussianBlur(canvas, (3, 3), 0)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * rng.uniform(2, 10)
    image = np.round(canvas).clip(0, 255).astype(np.uint8)

    objects = []
    for k, cls in enumerate(labels):
        ys, xs = np.nonzero(owner == k)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        objects.append((cls, [x0, y0, x1 - x0 + 1, y1 - y0 + 1]))
    return image, objects


def render_image(rng, size, class_names=CLASS_NAMES, max_occlusion=MAX_OCCLUSION):
    """Render one image of the ``shapes`` style.

    Returns ``(image, objects)`` where image is (size, size, 3) uint8 RGB and objects is
    a list of ``(class_index, [x, y, w, h])`` with integer pixel boxes of the visible part.
    """
    canvas = _background(rng, size)
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    # the class of each object is drawn just before it is placed (the generator's RNG order)
    items = ((int(rng.integers(len(class_names))), scale) for scale in _sample_scales(rng, n, size))

    def place(cls, scale):
        return _place(rng, class_names[cls], scale, size)

    def paint(region, alpha, hard, cls, x0, y0):
        h, w = alpha.shape
        color = _object_color(rng, region, hard, cls, len(class_names))
        region += (ramped_fill(rng, color, x0, y0, h, w, size) - region) * alpha[..., None]

    owner, labels = paint_objects(rng, canvas, items, place, paint, max_occlusion)
    return finish_image(rng, canvas, owner, labels)
