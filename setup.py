"""Packaging hook: the repository's ``configs/`` travel inside the package as ``defeat/configs``.

Everything else is declared in ``setup.cfg``. The configs stay at the repository root (where
the scripts, docs and tests name them as ``configs/...``); building a wheel copies their
``.yaml`` and ``.py`` files into the package, so that ``defeat.get_config_file`` finds them in
an installed copy. Editable installs skip the copy: ``get_config_file`` then reads the
repository's own ``configs/``.
"""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_SUFFIXES = (".yaml", ".py")


class build_py_with_configs(build_py):  # noqa: N801 (setuptools command naming)
    """``build_py`` + a copy of ``configs/**/*.{yaml,py}`` into ``<build_lib>/defeat/configs``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = os.path.join(HERE, "configs")
        if not os.path.isdir(source):
            raise FileNotFoundError(f"{source} is missing: the package's configs are built from it")
        target = os.path.join(self.build_lib, "defeat", "configs")
        for root, _, files in os.walk(source):
            for name in sorted(files):
                if name.endswith(CONFIG_SUFFIXES):
                    rel = os.path.relpath(os.path.join(root, name), source)
                    os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
                    shutil.copyfile(os.path.join(source, rel), os.path.join(target, rel))


setup(cmdclass={"build_py": build_py_with_configs})
