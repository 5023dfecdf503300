"""Run every ```python block of a README, each in a fresh ``python`` process.

Usage: python readme_blocks.py README.md. The blocks run in the current directory (CI runs
them from outside the checkout, against the installed wheel). Stops at the first failure,
naming the block's line; exit status 0 if every block ran, 1 otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the opening fence, 1-based; code) of each ```python block, in order."""
    blocks, start, code = [], None, []
    for number, line in enumerate(text.splitlines(), start=1):
        if start is None:
            if line.strip() == "```python":
                start, code = number, []
        elif line.strip() == "```":
            blocks.append((start, "\n".join(code) + "\n"))
            start = None
        else:
            code.append(line)
    if start is not None:
        raise SystemExit(f"line {start}: a ```python block is never closed")
    return blocks


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python readme_blocks.py README.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    if not blocks:
        print(f"{path}: no ```python block found", file=sys.stderr)
        return 1
    for line, code in blocks:
        began = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            print(f"{path}:{line}: the python block failed (exit status {result.returncode})",
                  file=sys.stderr)
            print(result.stdout + result.stderr, file=sys.stderr)
            return 1
        print(f"{path}:{line}: ok ({time.perf_counter() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
