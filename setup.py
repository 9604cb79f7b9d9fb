"""The one C extension (everything else is in pyproject.toml): the fused statistics loop of `analyze`.

With FMA contraction off, its AVX2 loop (picked at import on x86-64 CPUs that have AVX2) and its plain C
loop give the same sums on every CPU. setup.py rather than pyproject's `ext-modules`, which setuptools
still marks experimental (and warns about on every install).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("normscope._kernels", ["normscope/_kernels.c"],
                             extra_compile_args=["-O3", "-ffp-contract=off", "-Wno-psabi"])])
