"""Build the Cython core.

pyproject.toml holds the project metadata; this file only declares the
compiled extensions, because their sources live outside the package (in
_native/) and are compiled as ``engine._native.<name>``.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

NATIVE = ["spawn", "layers"]

extensions = [
    Extension(f"engine._native.{name}", [f"_native/{name}.pyx"])
    for name in NATIVE
    if os.path.exists(f"_native/{name}.pyx")
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["_native"],
        # Generated C goes to build/, never next to the sources.
        build_dir="build/cython",
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        quiet=True,
    ),
)
