"""Fail the image build when a package got into the ComfyUI environment without a pin.

    pip freeze | python scripts/check_lock.py requirements-comfyui.txt /comfyui/requirements.txt

Reads `pip freeze` output on stdin. Every installed package must be pinned (`name==version`) in
one of the given files, at the version installed: the lock of the image, or ComfyUI's own
requirements at its pinned commit (which pins its frontend packages itself). A node pack that
starts to need a new package would otherwise get whatever version is newest on the day of the
build, which is how the old image picked up upstream regressions.

STRICT_PINS=0 turns the failure into a warning (for a one-off build while the lock is updated).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            found[normalize(m.group(1))] = m.group(2)
    return found


def unpinned(installed: dict[str, str], pinned: dict[str, str]) -> list[str]:
    problems = []
    for name, version in sorted(installed.items()):
        if name not in pinned:
            problems.append(f"{name}=={version} is installed but pinned nowhere")
        elif pinned[name] != version:
            problems.append(f"{name}=={version} is installed but pinned at {pinned[name]}")
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    pinned: dict[str, str] = {}
    for path in argv:
        pinned.update(pins(Path(path).read_text()))
    installed = pins(sys.stdin.read())
    problems = unpinned(installed, pinned)
    for problem in problems:
        print(f"check_lock: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_lock: all {len(installed)} installed packages are pinned")
        return 0
    print(f"check_lock: add the versions above to {argv[0]} (or build with --build-arg STRICT_PINS=0 "
          "to go on with a warning)", file=sys.stderr)
    return 0 if os.environ.get("STRICT_PINS", "1") == "0" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
