"""The one C extension (everything else is in pyproject.toml): normscope._kernels.

`normscope/_kernels.c` holds the fused statistics loop of `analyze` and the module; `normscope/kernels/`
holds ggml's quantizers, one file per family, and their table (qtable.c). With FMA contraction off, every
loop does the IEEE operations its source writes, so the numbers and bytes are the same on every CPU.
setup.py rather than pyproject's `ext-modules`, which setuptools still marks experimental (and warns
about on every install).
"""

from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
SOURCES = ["normscope/_kernels.c", *sorted(p.relative_to(HERE).as_posix() for p in (HERE / "normscope/kernels").glob("*.c"))]

setup(ext_modules=[Extension("normscope._kernels", SOURCES, depends=[str(p.relative_to(HERE)) for p in (HERE / "normscope/kernels").glob("*.h")],
                             extra_compile_args=["-O3", "-ffp-contract=off", "-Wno-psabi"])])
