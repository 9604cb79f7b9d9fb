"""The one C extension (everything else is in pyproject.toml): the fused statistics loop of `analyze`.

Vector extensions with FMA contraction off give the same sums on every CPU; on x86-64 GCC builds AVX2
is picked at run time (target_clones). setup.py rather than pyproject's `ext-modules`, which setuptools
still marks experimental (and warns about on every install).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("normscope._kernels", ["normscope/_kernels.c"],
                             extra_compile_args=["-O3", "-ffp-contract=off", "-Wno-psabi"])])
