"""Builds pydamon's optional C helper (the per-sample access-check loop) at install time.

The metadata lives in pyproject.toml; this file only adds the extension module
``pydamon.ops._fastpath``, compiled by ``pip install`` (``pip install -e`` puts it next to its
source in src/). It is optional: when it cannot be compiled (no compiler, ``CC=false``, a
platform the C does not build on) the build warns and the package installs without it, and the
pure-Python path runs (``pydamon features`` says which path runs and why). pip shows a build's
warnings with ``-v``.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HELPER = "pydamon.ops._fastpath"


def warn_not_built(err: BaseException) -> None:
    rule = "=" * 78
    print(
        f"\n{rule}\nWARNING: pydamon's C helper ({HELPER}) was not built: {err}\n"
        "pydamon installs without it and checks accesses in pure Python (slower; the same\n"
        "results). To build it, install a C compiler and reinstall pydamon.\n"
        f"{rule}\n",
        file=sys.stderr,
        flush=True,
    )


class OptionalBuildExt(build_ext):
    """build_ext whose failure is a warning: the helper is an optimization, not a need."""

    def initialize_options(self) -> None:
        super().initialize_options()
        #: the extensions that failed to build
        self.not_built: set[str] = set()

    def run(self) -> None:
        try:
            super().run()
        except Exception as err:  # e.g. no compiler found before any extension is tried
            warn_not_built(err)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as err:  # the compile or the link failed
            self.not_built.add(ext.name)
            warn_not_built(err)

    def copy_extensions_to_source(self) -> None:
        # (pip install -e) only what was built: a missing file is not a second failure
        built = [ext for ext in self.extensions if ext.name not in self.not_built]
        self.extensions, everything = built, self.extensions
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = everything


setup(
    ext_modules=[Extension(HELPER, ["src/pydamon/ops/_fastpath.c"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
