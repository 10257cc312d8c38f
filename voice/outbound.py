"""What a session sends, in order: the queue its writer task drains onto the socket."""

from __future__ import annotations

import asyncio
from typing import Any

from voice import protocol as proto

CLOSE = object()  # the sentinel after which the writer closes the connection


class Outbound:
    """The queue the writer task drains: encoded JSON events and reply audio, in order, then the close
    sentinel. Audio of a dropped turn is discarded, also when it is already queued."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._dropped: set[str] = set()

    def send(self, event: dict[str, Any]) -> None:
        self.queue.put_nowait((proto.encode(event), None))

    def send_audio(self, pcm: bytes, turn_id: str) -> None:
        self.queue.put_nowait((pcm, turn_id))

    def drop_audio(self, turn_id: str) -> None:
        self._dropped.add(turn_id)

    def dropped(self, turn_id: str | None) -> bool:
        return turn_id in self._dropped

    def close(self) -> None:
        self.queue.put_nowait(CLOSE)
