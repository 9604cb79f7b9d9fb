"""Reference libraries that cannot share the test environment's resolution, installed once into the test cache.

llm-compressor 0.14.0.1 (the GPTQ and AWQ reference, issue 22) pins transformers<=5.17 and
compressed-tensors 0.19.0, while the suite holds transformers' conventions and compressed-tensors 0.20.1's NVFP4
values. Its algorithms do not depend on those pins, so it is installed without its dependencies into
$NORMSCOPE_TEST_CACHE/oracles/ and appended to sys.path *after* the environment: every package the environment
has (torch, transformers, compressed-tensors) is the environment's. The imports it needs beyond those (datasets,
loguru) are pinned in the `test` extra.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from real_models import cache_dir

LLMCOMPRESSOR = "llmcompressor==0.14.0.1"


def _install(spec: str) -> Path:
    target = cache_dir() / "oracles" / spec.replace("==", "-")
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".install-", dir=target.parent))
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                        "--target", str(tmp), spec], check=True)
        (tmp / ".complete").write_text(spec + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def llmcompressor_path() -> Path:
    """Put llm-compressor 0.14.0.1 on sys.path (after the environment's packages) and return its directory."""
    path = _install(LLMCOMPRESSOR)
    if str(path) not in sys.path:
        sys.path.append(str(path))
    return path
