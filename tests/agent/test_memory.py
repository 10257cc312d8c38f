"""The malloc arena cap and trimming (agent/memory.py), observed in a process of their own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent import memory

PROGRAM = """
import ctypes, sys, threading
from agent import memory
memory.limit_arenas(int(sys.argv[1]))
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    for _ in range(2000):
        blocks = [bytearray(4096) for _ in range(64)]
        del blocks
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
memory.trim()
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def arenas_used(limit: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(limit)], capture_output=True, text=True, check=True, timeout=60
    )
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_cap_keeps_threads_to_that_many_arenas() -> None:
    assert memory._glibc() is not None
    assert arenas_used(0) > 2  # glibc's default: threads allocating at once get arenas of their own
    assert arenas_used(2) <= 2


def test_zero_leaves_the_default() -> None:
    assert memory.limit_arenas(0) is False
