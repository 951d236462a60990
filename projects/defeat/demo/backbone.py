"""Moved to ``defeat.modeling.backbones`` (the library registers the slim backbones); this path
keeps working for configs that name ``defeat.demo.backbone``."""

from ..modeling.backbones import *  # noqa: F401,F403
from ..modeling.backbones import __all__  # noqa: F401
