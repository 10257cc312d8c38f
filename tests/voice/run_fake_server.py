"""``python -m tests.voice.run_fake_server PORT``: the real voice server over fake models (signal tests)."""

from __future__ import annotations

import asyncio
import logging
import sys

from tests.voice.voice_fakes import make_services
from voice.server import run_server

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(run_server(make_services(), "127.0.0.1", int(sys.argv[1])))  # type: ignore[arg-type]
    print("stopped cleanly", flush=True)
