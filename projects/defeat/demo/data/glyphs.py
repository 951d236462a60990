"""The ``glyphs`` style: a second generated dataset of a different character from ``shapes``.

Where ``shapes`` has objects whose hue narrows the class down, ``glyphs`` has ten other object
kinds whose colour says nothing about the class (a random hue each), stretched to aspect ratios
from 1:2 to 2:1 and standing roughly upright like characters (tilted by at most
``MAX_TILT_DEG``), 1-6 per image over the same cluttered backgrounds plus 1-2 *decoys*: random
polygons painted exactly like objects but never labelled, so a detector has to tell
object-like distractors from objects by shape alone. As in ``shapes``, a colour is redrawn
(up to 8 times) until it stands out from what it covers.

(Earlier versions were too hard to say anything about distillation on a CPU budget: v1 filled
objects with stripes and checks and packed 3-12 mostly small objects per image, a from-scratch
R18 teacher reached 2.9 AP in 1500 iterations; v2 turned every object to any angle and packed
2-9, 40 % small, with 1-3 decoys: 8.3 AP; v3, upright but in colours that could melt into the
background, up to 40 % hidden, with hairline arrows: 23.7 AP in 1300 iterations.)

Annotation conventions are those of :mod:`.synthetic` (boxes tight around the visible pixels,
area = box area, 1-based ids, at most ``MAX_OCCLUSION`` of an object hidden).
"""

import numpy as np

from .synthetic import (
    _background,
    _place,
    _rand_color,
    _regular,
    _rot,
    contrasting_color,
    finish_image,
    paint_objects,
    ramped_fill,
)

GLYPHS_VERSION = 4
GLYPH_CLASS_NAMES = (
    "arrow",
    "chevron",
    "crescent",
    "cross",
    "trapezoid",
    "pentagon",
    "half_disc",
    "bowtie",
    "tee",
    "frame",
)
MIN_OBJECTS, MAX_OBJECTS = 1, 6
SMALL_PROB = 0.25  # chance that an object is small (14-32 px), else medium (32-90 px)
SMALL_MIN = 14.0
LARGE_PROB = 0.2  # chance that an image starts with a large object (90 px up)
MAX_TILT_DEG = 20.0  # objects stand upright, tilted by a uniform angle in +-this
MAX_OCCLUSION = 0.25
ASPECT_RANGE = (0.5, 2.0)  # width / height stretch of an object before rotation
NUM_DECOYS = (1, 2)


def _glyph(name, rng):
    """Return (outer polygons, hole polygons, rotation in rad), as ``synthetic._shape``:
    (N, 2) float arrays centred near the origin, stretched to a random aspect ratio."""
    holes = []
    if name == "arrow":
        t, head = rng.uniform(0.28, 0.36), rng.uniform(0.35, 0.5)
        neck = 1 - 2 * head
        outer = [[[-1, -t], [neck, -t], [neck, -0.6], [1, 0], [neck, 0.6], [neck, t], [-1, t]]]
    elif name == "chevron":
        t = rng.uniform(0.3, 0.45)
        outer = [[[-1, -1], [0, 1 - 2 * t], [1, -1], [1, -1 + 2 * t], [0, 1], [-1, -1 + 2 * t]]]
    elif name == "crescent":
        outer = [_regular(48)]
        holes = [_regular(48) * rng.uniform(0.75, 0.9) + [rng.uniform(0.3, 0.5), 0.0]]
    elif name == "cross":  # an X: two thin bars at +-45 degrees
        t = rng.uniform(0.22, 0.3)
        arm = np.array([[-1, -t], [1, -t], [1, t], [-1, t]])
        outer = [arm @ _rot(np.pi / 4).T, arm @ _rot(-np.pi / 4).T]
    elif name == "trapezoid":
        top = rng.uniform(0.3, 0.55)
        outer = [[[-1, 0.6], [1, 0.6], [top, -0.6], [-top, -0.6]]]
    elif name == "pentagon":
        outer = [_regular(5, -np.pi / 2)]
    elif name == "half_disc":
        a = np.linspace(0, np.pi, 24)
        outer = [np.stack([np.cos(a), np.sin(a) - 0.5], axis=1)]
    elif name == "bowtie":  # two triangles meeting at a narrow waist
        w = rng.uniform(0.1, 0.25)
        outer = [[[-1, -1], [1, -1], [0, -w], [1, 1], [-1, 1], [0, w]]]
    elif name == "tee":
        t = rng.uniform(0.25, 0.35)
        bar, stem = -1 + 2 * t, t / 2
        outer = [[[-1, -1], [1, -1], [1, bar], [stem, bar], [stem, 1], [-stem, 1], [-stem, bar], [-1, bar]]]
    elif name == "frame":
        square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
        outer, holes = [square], [square * rng.uniform(0.5, 0.7)]
    else:
        raise ValueError(f"unknown glyph {name!r}")
    s = np.sqrt(rng.uniform(*ASPECT_RANGE))
    stretch = np.array([s, 1.0 / s])
    theta = np.deg2rad(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG))
    return [np.asarray(p, float) * stretch for p in outer], [np.asarray(h, float) * stretch for h in holes], theta


def _decoy(name, rng):
    """An unlabelled distractor: a random star-shaped polygon (6-10 vertices), as ``_glyph``."""
    n = int(rng.integers(6, 11))
    a = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.45, 1.0, n)
    return [np.stack([r * np.cos(a), r * np.sin(a)], axis=1)], [], rng.uniform(0, 2 * np.pi)


def _fill_color(rng, region, alpha, x0, y0, size):
    """(h, w, 3) float32 fill of one object or decoy covering ``alpha`` (h, w) of ``region``: a
    random colour (any hue, so it says nothing about the class) that stands out from what it
    covers, with a faint brightness ramp across the image."""
    h, w = alpha.shape
    color = contrasting_color(rng, region, alpha > 0.5, _rand_color)
    return ramped_fill(rng, color, x0, y0, h, w, size)


def sample_scales(rng, n, size):
    """n object scales sqrt(w*h) in px: small or medium, sometimes one large first."""
    scales = []
    hi = 0.9 * size
    if rng.random() < LARGE_PROB:
        scales.append(rng.uniform(90.0, hi))
    while len(scales) < n:
        lo, up = (SMALL_MIN, 32.0) if rng.random() < SMALL_PROB else (32.0, 90.0)
        scales.append(float(np.exp(rng.uniform(np.log(lo), np.log(min(up, hi))))))
    return scales


def render_glyphs_image(rng, size, class_names=GLYPH_CLASS_NAMES, max_occlusion=MAX_OCCLUSION):
    """Render one ``glyphs`` image; returns ``(image, objects)`` as ``synthetic.render_image``."""
    canvas = _background(rng, size)
    for _ in range(int(rng.integers(NUM_DECOYS[0], NUM_DECOYS[1] + 1))):  # painted first, never labelled
        alpha, x0, y0 = _place(rng, "decoy", rng.uniform(12.0, 60.0), size, shape_fn=_decoy)
        h, w = alpha.shape
        region = canvas[y0 : y0 + h, x0 : x0 + w]
        region += (_fill_color(rng, region, alpha, x0, y0, size) - region) * alpha[..., None]

    n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    items = [(int(rng.integers(len(class_names))), scale) for scale in sample_scales(rng, n, size)]

    def place(cls, scale):
        return _place(rng, class_names[cls], scale, size, shape_fn=_glyph)

    def paint(region, alpha, hard, cls, x0, y0):
        region += (_fill_color(rng, region, alpha, x0, y0, size) - region) * alpha[..., None]

    owner, labels = paint_objects(rng, canvas, items, place, paint, max_occlusion)
    return finish_image(rng, canvas, owner, labels)
