"""Print one of the README's set-up commands: ``main`` (install and run the main job) or
``test`` (install and run the whole test suite).

The command is the first ``sh`` block after the README's ``<!-- command: NAME -->``
marker, so CI runs exactly what the README tells a new user to run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def command(name: str, text: str) -> str:
    marker = f"<!-- command: {name} -->"
    at = text.find(marker)
    if at < 0:
        raise SystemExit(f"README.md has no {marker} marker")
    block = re.search(r"```sh\n(.*?)\n```", text[at:], re.DOTALL)
    if block is None:
        raise SystemExit(f"README.md has no ```sh block after {marker}")
    return block.group(1).strip()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: readme_command.py main|test")
    print(command(sys.argv[1], README.read_text(encoding="utf-8")))
