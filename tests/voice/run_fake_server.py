"""``python -m tests.voice.run_fake_server PORT [DRAIN_TIMEOUT_S]``: the real voice server over fake models
(signal tests)."""

from __future__ import annotations

import asyncio
import logging
import sys

from tests.voice.voice_fakes import make_services
from voice.server import run_server

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    voice = {"drain_timeout_s": float(sys.argv[2])} if len(sys.argv) > 2 else {}
    asyncio.run(run_server(make_services(**voice), "127.0.0.1", int(sys.argv[1])))  # type: ignore[arg-type]
    print("stopped cleanly", flush=True)
