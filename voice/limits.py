"""How much one client may ask of the server: frame rate, idleness and open sessions.

- :class:`TokenBucket`: the per-connection message-rate limit (``message_rate`` frames a second on
  average, bursts of ``message_burst``), on an injectable clock so it is tested without waiting.
- :class:`FrameGuard`: that bucket for one connection, deciding for each frame whether it is admitted and
  whether a refusal is worth an ``error`` event (the first refusal, then at most one every
  ``report_every_s``, so a flood does not get a flood of errors back).
- :class:`SessionSlots`: open sessions per server and per client address.
- :class:`GuardedConnection`: the websocket connection class the server uses. Its ``recv`` admits frames
  through the connection's :class:`FrameGuard` and enforces ``idle_timeout_s``; dropped frames never reach
  the session, which keeps running.

Every refusal is a typed ``error`` event (:class:`voice.protocol.ErrorCode`): ``rate_limited`` (the frame
is dropped, the session stays), ``idle_timeout`` (the connection is closed with 1000), ``server_busy`` and
``too_many_sessions`` (sent by the server before it closes a new connection with 1013).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from voice import protocol as proto
from voice.protocol import ErrorCode

if TYPE_CHECKING:
    from websockets.typing import Data

    from voice.config import VoiceSettings

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens a second flow into a bucket holding at most ``burst``; it starts full.

    :meth:`take` removes tokens if there are enough. ``rate == 0`` means no limit: every take succeeds.
    """

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        if rate < 0 or burst < 1:
            raise ValueError(f"need rate >= 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    @property
    def tokens(self) -> float:
        """Tokens in the bucket now."""
        self._refill()
        return self._tokens

    def take(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens; False (and nothing taken) when the bucket holds fewer."""
        if self.rate == 0:
            return True
        self._refill()
        if self._tokens + 1e-9 < n:
            return False
        self._tokens -= n
        return True

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._at)  # a clock that steps back adds nothing
        self._at = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)


class Admission(Enum):
    ADMIT = "admit"
    REFUSE_AND_REPORT = "refuse_and_report"  # drop the frame and send a rate_limited error
    REFUSE = "refuse"  # drop the frame quietly (a rate_limited error was sent less than a second ago)


class FrameGuard:
    """The message-rate limit of one connection. One :meth:`admit` call per received frame."""

    def __init__(
        self, rate: float, burst: int, *, report_every_s: float = 1.0, clock: Clock = time.monotonic
    ) -> None:
        self.bucket = TokenBucket(rate, burst, clock)
        self._clock = clock
        self._report_every_s = report_every_s
        self._last_report: float | None = None
        self.refused = 0  # frames dropped so far

    @classmethod
    def from_settings(cls, settings: VoiceSettings) -> FrameGuard:
        return cls(settings.message_rate, settings.message_burst)

    def admit(self) -> Admission:
        if self.bucket.take():
            return Admission.ADMIT
        self.refused += 1
        now = self._clock()
        if self._last_report is None or now - self._last_report >= self._report_every_s:
            self._last_report = now
            return Admission.REFUSE_AND_REPORT
        return Admission.REFUSE


@dataclass(frozen=True)
class SlotRefusal:
    code: str
    message: str


class SessionSlots:
    """Open sessions of one server, in total and per client address. ``0`` means no limit."""

    def __init__(self, max_total: int = 0, max_per_client: int = 0) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self._per_client: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: VoiceSettings) -> SessionSlots:
        return cls(settings.max_sessions, settings.max_sessions_per_client)

    @property
    def open(self) -> int:
        return sum(self._per_client.values())

    def of(self, client: str) -> int:
        return self._per_client[client]

    def acquire(self, client: str) -> SlotRefusal | None:
        """Take a slot for ``client``; a :class:`SlotRefusal` (nothing taken) when a limit is reached."""
        if self.max_total and self.open >= self.max_total:
            return SlotRefusal(
                ErrorCode.SERVER_BUSY, f"the server has {self.max_total} sessions open; try again later"
            )
        if self.max_per_client and self._per_client[client] >= self.max_per_client:
            return SlotRefusal(
                ErrorCode.TOO_MANY_SESSIONS,
                f"{self.max_per_client} sessions are open from your address; close one or try again later",
            )
        self._per_client[client] += 1
        return None

    def release(self, client: str) -> None:
        if self._per_client[client] <= 1:
            del self._per_client[client]
        else:
            self._per_client[client] -= 1


class GuardedConnection(ServerConnection):
    """A server connection whose :meth:`recv` applies the connection's limits before a frame reaches the
    session: frames over the message rate are dropped (with a ``rate_limited`` error now and then), and
    with ``idle_timeout_s`` a connection that carried no frame either way for that long (neither the
    client's input nor a reply) gets an ``idle_timeout`` error and is closed.

    The server sets :attr:`guard`, :attr:`idle_timeout_s` and :attr:`on_error` (called with each error
    code sent, for the metrics) right after the handshake, before the session reads.
    """

    guard: FrameGuard | None = None
    idle_timeout_s: float = 0.0
    on_error: Callable[[str], None] | None = None

    def limit(
        self,
        guard: FrameGuard | None,
        idle_timeout_s: float = 0.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.guard = guard
        self.idle_timeout_s = idle_timeout_s
        self.on_error = on_error

    async def recv(self, decode: bool | None = None) -> Data:  # type: ignore[override]
        while True:
            frame = await self._recv_within_idle_timeout(decode)
            guard = self.guard
            if guard is None:
                return frame
            admission = guard.admit()
            if admission is Admission.ADMIT:
                return frame
            if admission is Admission.REFUSE_AND_REPORT:
                rate = guard.bucket
                await self._send_error(
                    ErrorCode.RATE_LIMITED,
                    f"more than {rate.rate:g} messages a second (bursts of {rate.burst:g}): "
                    f"{guard.refused} dropped so far",
                )

    async def send(self, *args: Any, **kwargs: Any) -> None:
        self._last_activity = time.monotonic()  # a reply being sent is not idleness
        await super().send(*args, **kwargs)

    async def _recv_within_idle_timeout(self, decode: bool | None) -> Data:
        """The next frame; with ``idle_timeout_s``, close the connection once nothing has gone either way
        for that long (the next ``recv`` then raises ``ConnectionClosedOK``: the session ends normally)."""
        if self.idle_timeout_s <= 0:
            return await super().recv(decode)
        while True:
            last = getattr(self, "_last_activity", None)
            if last is None:
                last = self._last_activity = time.monotonic()
            remaining = last + self.idle_timeout_s - time.monotonic()
            if remaining <= 0:
                await self._send_error(
                    ErrorCode.IDLE_TIMEOUT, f"nothing for {self.idle_timeout_s:g} s; closing"
                )
                await self.close(1000, "idle timeout")
                return await super().recv(decode)
            try:  # recv is cancellation-safe: a frame arriving as the wait ends is not lost
                frame = await asyncio.wait_for(super().recv(decode), remaining)
            except TimeoutError:
                continue  # something may have been sent meanwhile: measure again
            self._last_activity = time.monotonic()
            return frame

    async def _send_error(self, code: str, message: str) -> None:
        if self.on_error is not None:
            self.on_error(code)
        with contextlib.suppress(ConnectionClosed):
            await self.send(proto.encode(proto.error_event(code, message)))
