"""Keeping a long-running process's resident memory flat: glibc's malloc arenas, and giving freed memory back.

glibc gives each thread that allocates under contention an arena of its own, up to eight per core, and
memory freed in one arena is not reused by another. A server whose model calls hop between worker threads
(ONNX Runtime, CTranslate2, openSMILE, torch in ``asyncio.to_thread``) then grows with every new mix of
threads and sizes. :func:`limit_arenas` caps the arenas (``mallopt(M_ARENA_MAX)``, what the
``MALLOC_ARENA_MAX`` environment variable does, set from the config tree instead) and :func:`trim` returns
the free pages at the top of each heap to the system (``malloc_trim``). On a libc without them (musl,
macOS) both do nothing. ``docs/testing.md`` has the measurement behind the default.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (both exist only in glibc)
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (0: leave glibc's default). Call before threads start."""
    libc = _glibc()
    if arenas <= 0 or libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, int(arenas)))


def trim() -> None:
    """Give the memory malloc holds free back to the system."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


async def trim_every(interval_s: float) -> None:
    """Run :func:`trim` every ``interval_s`` seconds, in a worker thread, until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(trim)
