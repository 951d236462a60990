"""The ``photos`` style: a third generated dataset, of objects cut from real photographs.

Where ``shapes`` and ``glyphs`` paint polygons, ``photos`` pastes real photographic objects onto
real photographic backgrounds. Every pixel comes from the sample photographs that ship inside
scikit-image's wheel (``skimage/data/``, read from disk: nothing is downloaded), so the data is
reproducible offline from the pinned ``scikit-image`` alone. Six classes, each cut with an exact
mask:

* ``coin``: one of the 24 Greek coins of ``coins.png``, each segmented on its own (Sobel
  elevation map, watershed from dark / bright markers, holes filled, connected components);
* ``horse``: the silhouette of ``horse.png`` as the mask, filled with a random crop of a real
  photo (fur, wood, tissue, suit, bricks, ...), so only its shape tells the class;
* ``cat``: the face of the cat in ``chelsea.png`` (an elliptical cut-out);
* ``face``: the astronaut's head in ``astronaut.png`` (an elliptical cut-out);
* ``rocket``: the rocket of ``rocket.jpg`` (a polygon around the rocket, with its sky);
* ``cup``: the espresso cup of ``coffee.png`` (an elliptical cut-out).

Backgrounds are random crops (15-100 % of the side, flipped, tinted and brightness-jittered) of
``gravel``, ``grass``, ``brick``, ``text``, ``hubble_deep_field``, ``retina``, ``cell`` and
``ihc``, none of which holds an object of a class. 1-6 objects per image, of a class drawn
uniformly, each scaled to a random size (a quarter small, 14-32 px, the rest medium, 32-90 px,
and one image in five starting with a large one, 90 px up; sqrt(w * h) of the object's mask),
flipped half the time, turned by up to ``MAX_TILT_DEG``, its brightness, contrast and colour
balance jittered; at most ``MAX_OCCLUSION`` of an object hidden by later ones, every object
inside the image. Annotation conventions are those of :mod:`.synthetic`: boxes tight around the
visible pixels of the pasted mask (coverage >= 0.5), area = box area, 1-based ids.

Licences, from each loader's docstring in ``skimage/data/_fetchers.py`` (the ``README.txt``
inside the installed ``skimage/data`` says only that the folder holds a subset of scikit-image's
sample data and how to download the rest; it names no licence): ``coins`` "No known copyright
restrictions" (Brooklyn Museum); ``horse`` CC0 (Andreas Preuss, openclipart); ``chelsea`` CC0
(Stefan van der Walt); ``astronaut`` public domain (NASA); ``rocket`` public domain (SpaceX);
``coffee`` CC0 (Rachel Michetti); ``gravel`` and ``brick`` CC0 (CC0Textures); ``grass`` CC0;
``text`` public domain; ``hubble_deep_field`` public domain (NASA); ``retina`` CC0 1.0; ``cell``
CC0; ``ihc`` "No known copyright restrictions". Photos whose docstring states no licence
(``moon``, ``page``, the ``lfw_subset`` faces, the Middlebury ``motorcycle`` pair) are not used
(nor ``camera``, CC0 but with an unlabelled face in it). Every source is thus CC0, public domain or
without known copyright restrictions, and so are the generated images.

Each image draws from its own RNG (``(seed, split, index)``), so a seed gives the same bytes;
the source cut-outs are computed once per process, deterministically.
"""

import functools
import os

import cv2
import numpy as np

from .glyphs import sample_scales  # the same sizes as glyphs
from .synthetic import finish_image, paint_objects

PHOTOS_VERSION = 1
PHOTO_CLASS_NAMES = ("coin", "horse", "cat", "face", "rocket", "cup")
MIN_OBJECTS, MAX_OBJECTS = 1, 6
MAX_TILT_DEG = 10.0  # objects turned by a uniform angle in +-this
MAX_OCCLUSION = 0.25
BACKGROUNDS = ("gravel.png", "grass.png", "brick.png", "text.png", "hubble_deep_field.jpg", "retina.jpg")
BACKGROUNDS += ("cell.png", "ihc.png")
HORSE_FILLS = ("chelsea.png", "coffee.png", "ihc.png", "astronaut.png", "brick.png", "gravel.png", "retina.jpg")
# elliptical cut-outs: file -> (centre x, centre y, semi-axis x, semi-axis y) in source pixels
ELLIPSES = {
    "cat": ("chelsea.png", (245, 165, 135, 122)),
    "face": ("astronaut.png", (227, 101, 72, 89)),
    "cup": ("coffee.png", (303, 117, 132, 100)),
}
# the rocket of rocket.jpg (640 x 427), nose to the launch table, as a polygon (x, y)
ROCKET_POLYGON = (
    (323, 124),
    (316, 131),
    (310, 146),
    (309, 178),
    (312, 182),
    (312, 402),
    (334, 402),
    (334, 182),
    (337, 178),
    (336, 146),
    (330, 131),
)


def source_dir():
    """The folder of scikit-image's bundled sample photographs (``skimage/data``)."""
    try:
        import skimage.data
    except ImportError as e:  # the only style that needs it
        raise ImportError(
            "the photos demo dataset cuts its images from scikit-image's sample photos: "
            "pip install scikit-image (requirements.txt pins the version)"
        ) from e

    return os.path.dirname(skimage.data.__file__)


def _read_gray(name):
    """uint8 (H, W) of a bundled grey photo (``skimage.io``, as scikit-image's own loaders)."""
    from skimage import io

    img = io.imread(os.path.join(source_dir(), name))
    if img.ndim == 3:  # a grey picture stored with colour channels (horse.png: RGBA)
        img = np.round(img[..., :3].mean(axis=2)).astype(np.uint8)
    return img


def _read(name):
    """RGB float32 (H, W, 3) of a bundled photo (grey ones repeated to three channels)."""
    from skimage import io

    img = io.imread(os.path.join(source_dir(), name))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.float32)


def _crop_to_mask(rgb, mask, margin=2):
    """(rgb, alpha) cropped to the box of ``mask`` (float32 coverage) plus ``margin`` px."""
    ys, xs = np.nonzero(mask > 0)
    y0, x0 = max(int(ys.min()) - margin, 0), max(int(xs.min()) - margin, 0)
    y1, x1 = min(int(ys.max()) + margin + 1, mask.shape[0]), min(int(xs.max()) + margin + 1, mask.shape[1])
    return rgb[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].astype(np.float32)


def _coins():
    """The 24 coins of ``coins.png``, each ``(rgb, alpha)`` (segmented, holes filled)."""
    from scipy import ndimage as ndi
    from skimage import filters, segmentation

    gray = _read_gray("coins.png")
    markers = np.zeros(gray.shape, np.int32)
    markers[gray < 30], markers[gray > 150] = 1, 2
    coins = segmentation.watershed(filters.sobel(gray), markers) == 2
    labels, n = ndi.label(ndi.binary_fill_holes(coins))
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    out = []
    for k in range(1, n + 1):
        mask = labels == k
        if mask.sum() >= 500:  # drops specks; every coin has 1000 px or more
            out.append(_crop_to_mask(rgb, mask.astype(np.float32)))
    return out


def _ellipse_cutout(name, ellipse):
    rgb = _read(name)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cx, cy, ax, ay = ellipse
    cv2.ellipse(mask, (cx, cy), (ax, ay), 0, 0, 360, 255, -1, cv2.LINE_AA)
    return _crop_to_mask(rgb, mask.astype(np.float32) / 255.0)


def _rocket():
    rgb = _read("rocket.jpg")
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.array(ROCKET_POLYGON, np.int32)], 255, lineType=cv2.LINE_AA)
    return _crop_to_mask(rgb, mask.astype(np.float32) / 255.0)


def _horse_mask():
    """The silhouette of ``horse.png`` (black on white) as coverage, cropped to it."""
    gray = _read_gray("horse.png")
    alpha = 1.0 - gray.astype(np.float32) / 255.0
    return _crop_to_mask(np.zeros(gray.shape + (3,), np.float32), alpha)[1]


@functools.lru_cache(maxsize=1)
def sources():
    """Everything read from the bundled photos, once per process: ``{"objects": {class: [(rgb,
    alpha), ...]}, "horse": alpha, "backgrounds": [rgb, ...], "fills": [rgb, ...]}``."""
    objects = {"coin": _coins(), "rocket": [_rocket()]}
    for cls, (name, ellipse) in ELLIPSES.items():
        objects[cls] = [_ellipse_cutout(name, ellipse)]
    return {
        "objects": objects,
        "horse": _horse_mask(),
        "backgrounds": [_read(n) for n in BACKGROUNDS],
        "fills": [_read(n) for n in HORSE_FILLS],
    }


def _random_crop(rng, img, w, h, min_frac):
    """A random crop of ``img`` with the aspect of (w, h), from ``min_frac`` of the largest such
    crop up to all of it, resized to (w, h) and flipped half the time."""
    H, W = img.shape[:2]
    full = min(W / w, H / h)  # source px per output px at the largest crop
    f = full * rng.uniform(min_frac, 1.0)
    cw, ch = max(int(round(w * f)), 1), max(int(round(h * f)), 1)
    x0, y0 = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
    crop = cv2.resize(img[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _jitter(rng, rgb, brightness=0.2, contrast=0.2, colour=0.08, shift=15.0):
    """Mild brightness, contrast and colour-balance jitter of a float32 RGB image in [0, 255]."""
    mean = rgb.mean()
    gain = rng.uniform(1 - brightness, 1 + brightness) * rng.uniform(1 - colour, 1 + colour, 3).astype(np.float32)
    out = (rgb - mean) * np.float32(rng.uniform(1 - contrast, 1 + contrast)) + mean
    return (out * gain + np.float32(rng.uniform(-shift, shift))).clip(0, 255)


def _background(rng, size):
    """(size, size, 3) float32: a jittered random crop of a background photo."""
    bgs = sources()["backgrounds"]
    img = _random_crop(rng, bgs[int(rng.integers(len(bgs)))], size, size, 0.15)
    if rng.random() < 0.5:
        img = np.ascontiguousarray(np.rot90(img, int(rng.integers(1, 4))))
    return np.ascontiguousarray(_jitter(rng, img, colour=0.15))


def _cutout(rng, cls):
    """(rgb, alpha) of one instance of ``cls`` at its source resolution, before scaling."""
    if cls == "horse":
        alpha = sources()["horse"]
        fills = sources()["fills"]
        h, w = alpha.shape
        return _random_crop(rng, fills[int(rng.integers(len(fills)))], w, h, 0.3), alpha
    options = sources()["objects"][cls]
    return options[int(rng.integers(len(options)))]


def _transform(rng, rgb, alpha, scale, size):
    """Scale the cut-out so that sqrt(w * h) of its mask's box is ``scale`` (capped to fit the
    image), flip it half the time and turn it by up to ``MAX_TILT_DEG``; returns (rgb, alpha)."""
    h, w = alpha.shape
    s = min(scale / np.sqrt(w * h), (size - 4) / max(w, h))
    tw, th = max(int(round(w * s)), 2), max(int(round(h * s)), 2)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(rgb, (tw, th), interpolation=interp)
    alpha = cv2.resize(alpha, (tw, th), interpolation=interp)
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    theta = rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG)
    c, si = abs(np.cos(np.deg2rad(theta))), abs(np.sin(np.deg2rad(theta)))
    ow = min(int(np.ceil(tw * c + th * si)) + 2, size)
    oh = min(int(np.ceil(tw * si + th * c)) + 2, size)
    m = cv2.getRotationMatrix2D(((tw - 1) / 2, (th - 1) / 2), theta, 1.0)
    m[:, 2] += [(ow - tw) / 2, (oh - th) / 2]
    rgb = cv2.warpAffine(
        np.ascontiguousarray(rgb), m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(np.ascontiguousarray(alpha), m, (ow, oh), flags=cv2.INTER_LINEAR, borderValue=0)
    return rgb, alpha.clip(0, 1)


def render_photos_image_with_masks(rng, size, class_names=PHOTO_CLASS_NAMES, max_occlusion=MAX_OCCLUSION):
    """As :func:`render_photos_image`, plus ``owner`` (size, size) int16 (the object on top of
    each pixel, -1: background) and ``pasted``: per object, the (size, size) bool mask of its
    whole pasted cut-out (coverage >= 0.5), before later objects covered part of it."""
    canvas = _background(rng, size)
    n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    items = [(int(rng.integers(len(class_names))), scale) for scale in sample_scales(rng, n, size)]
    placed, pasted = {}, []

    def place(cls, scale):
        rgb, alpha = _cutout(rng, class_names[cls])
        rgb, alpha = _transform(rng, _jitter(rng, rgb), alpha, scale, size)
        h, w = alpha.shape
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        placed["rgb"] = rgb
        return alpha, x0, y0

    def paint(region, alpha, hard, cls, x0, y0):
        region += (placed["rgb"] - region) * alpha[..., None]
        full = np.zeros((size, size), bool)
        full[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] = hard
        pasted.append(full)

    owner, labels = paint_objects(rng, canvas, items, place, paint, max_occlusion)
    image, objects = finish_image(rng, canvas, owner, labels)
    return image, objects, owner, pasted


def render_photos_image(rng, size, class_names=PHOTO_CLASS_NAMES, max_occlusion=MAX_OCCLUSION):
    """Render one ``photos`` image; returns ``(image, objects)`` as ``synthetic.render_image``:
    (size, size, 3) uint8 RGB and ``(class_index, [x, y, w, h])`` per object, the box tight
    around the object's visible pixels."""
    image, objects, _, _ = render_photos_image_with_masks(rng, size, class_names, max_occlusion)
    return image, objects
