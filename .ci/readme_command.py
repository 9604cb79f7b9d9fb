"""Print one of the README's set-up commands (`analyze` or `test`), exactly as the README gives it.

.ci/run evaluates these, and tests/test_readme.py checks them, so the README cannot drift from CI.
"""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def command(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"<!-- readme:{name} -->\s*```bash\n(.+?)\n```", text, re.S)
    if not m:
        raise SystemExit(f"README.md has no <!-- readme:{name} --> block")
    return m.group(1).strip()


if __name__ == "__main__":
    print(command(sys.argv[1]))
