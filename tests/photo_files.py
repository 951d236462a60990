"""Test helpers: a tiny COCO dataset of real photographs (scikit-image's bundled photos), as a user
exports one from a labelling tool: JPEGs of a few hundred pixels or less, category ids not 1..N."""

import json
import os

import cv2
import numpy as np

# photo -> (class name, its box x, y, w, h in the original photo); category ids 5, 9, 12 as a
# labelling tool may number them
PHOTOS = {
    "chelsea": ("cat", (90, 20, 330, 280)),
    "coffee": ("cup", (40, 20, 490, 330)),
    "rocket": ("rocket", (290, 40, 70, 360)),
}
CATEGORIES = {"cat": 5, "cup": 9, "rocket": 12}


def write_photo_coco(root, split, num_images, image_dir="images", long_sides=(128, 160, 200), seed=0):
    """``num_images`` photos (each scaled to one of ``long_sides``, every other one mirrored) with
    their box, as ``<root>/<split>.json`` and JPEGs in ``<root>/<image_dir>``; returns the json's path."""
    from skimage import data

    rng = np.random.default_rng(seed)
    folder = os.path.join(root, image_dir)
    os.makedirs(folder, exist_ok=True)
    images, annotations = [], []
    names = list(PHOTOS)
    for i in range(num_images):
        photo = names[i % len(names)]
        cls, (x, y, w, h) = PHOTOS[photo]
        rgb = getattr(data, photo)()
        side = int(long_sides[int(rng.integers(len(long_sides)))])
        scale = side / max(rgb.shape[:2])
        height, width = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
        img = cv2.resize(rgb[:, :, ::-1], (width, height), interpolation=cv2.INTER_AREA)
        x, y, w, h = x * scale, y * scale, w * scale, h * scale
        if (i // len(names)) % 2:
            img, x = img[:, ::-1], width - x - w
        name = f"{split}_{i:02d}_{photo}.jpg"
        cv2.imwrite(os.path.join(folder, name), np.ascontiguousarray(img))
        images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        box = [round(v, 1) for v in (x, y, w, h)]
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": CATEGORIES[cls],
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
        )
    categories = [{"id": i, "name": n} for n, i in CATEGORIES.items()]
    path = os.path.join(root, f"{split}.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path
