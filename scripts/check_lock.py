"""Compares the packages installed in the running Python environment with requirements/lock.txt.

    python scripts/check_lock.py [LOCK]

Prints every package whose installed version differs from its pin, every installed package the lock does
not pin, and every pin that is not installed; exits 1 if there is any. The project itself (emo-agent) is
not compared. Standard library only.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PROJECT = "emo-agent"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)", line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def main() -> int:
    lock = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "requirements/lock.txt")
    pins, have = read_lock(lock), installed()
    have.pop(PROJECT, None)
    problems = [f"{n}: installed {have[n]}, locked {pins[n]}" for n in sorted(pins.keys() & have.keys())
                if have[n] != pins[n]]
    problems += [f"{n}: installed {have[n]}, not in the lock" for n in sorted(have.keys() - pins.keys())]
    problems += [f"{n}: locked {pins[n]}, not installed" for n in sorted(pins.keys() - have.keys())]
    for p in problems:
        print(p)
    matched = len(pins.keys() & have.keys()) - sum(have[n] != pins[n] for n in pins.keys() & have.keys())
    print(f"{lock}: {matched} of {len(pins)} pins installed at exactly that version, "
          f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
