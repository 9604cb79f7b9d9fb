"""The one C extension (everything else is in pyproject.toml): normscope._kernels.

`normscope/_kernels.c` holds the fused statistics loop of `analyze` and the module; `normscope/kernels/`
holds ggml's quantizers, one file per family, their table (qtable.c) and the fused measuring pass
(qmeasure.c). With FMA contraction off, every loop does the IEEE operations its source writes, so the
numbers and bytes are the same on every CPU. setup.py rather than pyproject's `ext-modules`, which
setuptools still marks experimental (and warns about on every install).
"""

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
KERNELS = HERE / "normscope" / "kernels"
SOURCES = ["normscope/_kernels.c", *sorted(p.relative_to(HERE).as_posix() for p in KERNELS.glob("*.c"))]
NO_COMPILER = ("normscope: building its C kernels needs a C compiler and the Python headers, and none worked "
               "({why}); install them (Debian/Ubuntu: apt-get install gcc python3-dev; Fedora: dnf install gcc "
               "python3-devel; macOS: xcode-select --install) and run pip again")


class BuildKernels(build_ext):
    """build_ext whose failure for want of a compiler is one line that says what to install."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # setuptools raises several kinds (CompileError, PlatformError, OSError)
            if type(e).__name__ in ("CompileError", "DistutilsPlatformError", "PlatformError", "DistutilsExecError",
                                    "LinkError", "FileNotFoundError", "CCompilerError"):
                sys.exit(NO_COMPILER.format(why=str(e).splitlines()[0] if str(e) else type(e).__name__))
            raise


setup(cmdclass={"build_ext": BuildKernels},
      ext_modules=[Extension("normscope._kernels", SOURCES,
                             depends=[p.relative_to(HERE).as_posix() for p in KERNELS.glob("*.h")],
                             extra_compile_args=["-O3", "-ffp-contract=off", "-Wno-psabi"])])
