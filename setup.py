"""Build the compiled core.

pyproject.toml holds the project metadata; this file only declares what is
compiled, because the sources live outside the package (in _native/):

- Cython extensions ``_native/<name>.pyx`` -> ``engine._native.<name>``;
- small C programs ``_native/<name>.c`` -> the executable
  ``engine/_native/dockyard-<name>``, linked statically: the init runs inside
  containers, which have no C library of their own, and the monitor must
  not depend on anything that can change under a running container.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = ["spawn", "layers"]
PROGRAMS = ["init", "monitor"]

extensions = [
    Extension(f"engine._native.{name}", [f"_native/{name}.pyx"])
    for name in NATIVE
    if os.path.exists(f"_native/{name}.pyx")
]


class BuildWithPrograms(build_ext):
    """build_ext, plus the C programs (compiled with the same compiler)."""

    def run(self):
        super().run()
        target_dir = os.path.join("engine", "_native") if self.inplace else \
            os.path.join(self.build_lib, "engine", "_native")
        os.makedirs(target_dir, exist_ok=True)
        for name in PROGRAMS:
            source = f"_native/{name}.c"
            if not os.path.exists(source):
                continue
            objects = self.compiler.compile([source], output_dir=self.build_temp,
                                            extra_postargs=["-O2", "-Wall"])
            self.compiler.link_executable(objects, f"dockyard-{name}", output_dir=target_dir,
                                          extra_postargs=["-static", "-s"])


setup(
    cmdclass={"build_ext": BuildWithPrograms},
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
