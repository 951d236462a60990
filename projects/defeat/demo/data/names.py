"""The demo datasets' names and generator defaults, importable without numpy or OpenCV (the
commands that offer them as choices read their arguments before their heavy imports)."""

__all__ = [
    "STYLES",
    "DEFAULT_STYLE",
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_NUM_CLASSES",
    "DEFAULT_SEED",
    "check_style",
]

STYLES = ("shapes", "glyphs", "photos")  # the generators (``writer``)
DEFAULT_STYLE = "shapes"

# The shapes generator (``synthetic``): its classes and the version of its output.
GENERATOR_VERSION = 3
CLASS_NAMES = (
    "circle",
    "ring",
    "square",
    "diamond",
    "triangle",
    "plus",
    "star",
    "hexagon",
    "bar",
    "ell",
)
DEFAULT_NUM_TRAIN = 3000
DEFAULT_NUM_VAL = 500
DEFAULT_IMAGE_SIZE = 128
DEFAULT_NUM_CLASSES = len(CLASS_NAMES)
DEFAULT_SEED = 0


def check_style(style: str) -> str:
    """``style`` when it is one of :data:`STYLES`.

    Raises:
        ValueError: naming the styles.
    """
    if style not in STYLES:
        raise ValueError(f"unknown dataset style {style!r}; choose one of {', '.join(STYLES)}")
    return style
