"""Build the Cython extensions in ``_speedups/``; everything else lives in pyproject.toml.

``CELERIAC_NO_EXTENSIONS=1`` builds a pure-Python install (no compiler needed).
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent


def _extensions() -> list[object]:
    if os.environ.get("CELERIAC_NO_EXTENSIONS") == "1":
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = os.environ.get("CELERIAC_DEBUG_ASSERTS") == "1"
    modules = [
        Extension(
            f"celeriac._speedups.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            extra_compile_args=["-O2"],
            define_macros=[("CYTHON_WITHOUT_ASSERTIONS", None)] if not debug else [],
        )
        for pyx in sorted((HERE / "_speedups").glob("*.pyx"))
    ]
    return list(
        cythonize(
            modules,
            include_path=[str(HERE / "_speedups" / "includes")],
            compiler_directives={
                "language_level": 3,
                "boundscheck": False,
                "wraparound": False,
                "cdivision": True,
                "embedsignature": True,
            },
            quiet=True,
        )
    )


setup(ext_modules=_extensions())
