"""The client's playback of one spoken reply, estimated on the server: pacing and what has been heard.

Sans-I/O: :class:`Playback` is told what was sent and when (monotonic seconds) and answers how long to wait
before the next frame, how far playback has got and what the user has heard; it never sleeps or sends.

- **Pacing.** Reply audio goes out no more than ``lead_s`` ahead of real time, as a loudspeaker would
  consume it. Playback time is counted from the first frame on the wall clock; when the client has played
  everything sent (TTS fell behind), the next frame starts playing on arrival, so gaps are allowed for.
- **Heard text** (:func:`heard_text`): the sentences whose audio has been played, plus, for the sentence
  playing, the share of its words matching the share of its audio played.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

AUDIO_FRAME_MS = 100
# Sentence ends and the sum of frame durations differ by float rounding.
_EPS = 1e-6


@dataclass(frozen=True)
class SpokenSentence:
    text: str
    start_s: float  # position in the reply's audio
    end_s: float


def heard_text(sentences: list[SpokenSentence], position_s: float) -> str:
    """What a listener has heard of ``sentences`` (in order, back to back) once ``position_s`` seconds of
    their audio have played: whole sentences, then the played share of the words of the one playing."""
    heard: list[str] = []
    for s in sentences:
        if s.end_s <= position_s + _EPS:
            heard.append(s.text)
        elif s.start_s < position_s:
            words = s.text.split()
            share = (position_s - s.start_s) / max(_EPS, s.end_s - s.start_s)
            n = int(len(words) * share)
            if n:
                heard.append(" ".join(words[:n]))
            break
        else:
            break
    return " ".join(heard)


def pcm_frames(pcm: bytes, sample_rate: int, frame_ms: int = AUDIO_FRAME_MS) -> Iterator[bytes]:
    """``pcm`` (16-bit mono) cut into frames of at most ``frame_ms`` (the last one may be shorter)."""
    frame_bytes = max(2, sample_rate * frame_ms // 1000 * 2)
    for offset in range(0, len(pcm), frame_bytes):
        yield pcm[offset : offset + frame_bytes]


@dataclass
class Playback:
    """One reply's audio as the client plays it. ``origin`` is the monotonic time at which audio position 0
    plays on the client (None until the first frame); ``sent_s`` the seconds of audio sent so far."""

    sentences: list[SpokenSentence] = field(default_factory=list)
    sent_s: float = 0.0
    origin: float | None = None

    def add_sentence(self, text: str, duration_s: float) -> None:
        """A sentence of ``duration_s`` seconds whose audio follows everything sent so far."""
        self.sentences.append(SpokenSentence(text, self.sent_s, self.sent_s + duration_s))

    def wait_before_frame(self, now: float, lead_s: float) -> float:
        """Seconds to wait before sending the next frame, asked at ``now``, so that audio runs at most
        ``lead_s`` ahead of the client. When the client has nothing left to play, the next frame starts
        playing on arrival (``origin`` moves accordingly)."""
        if self.origin is None or now - self.origin > self.sent_s:
            self.origin = now - self.sent_s
        ahead = self.sent_s - (now - self.origin)
        return ahead - lead_s if ahead > lead_s else 0.0

    def frame_sent(self, n_bytes: int, sample_rate: int) -> None:
        """A frame of ``n_bytes`` of 16-bit PCM at ``sample_rate`` has been sent."""
        self.sent_s += n_bytes / 2 / sample_rate

    def position(self, now: float) -> float:
        """Seconds of reply audio the client has played by ``now``."""
        if self.origin is None:
            return 0.0
        return min(max(0.0, now - self.origin), self.sent_s)

    def remaining(self, now: float) -> float:
        """Seconds of audio sent but not yet played at ``now``."""
        return max(0.0, self.sent_s - self.position(now))

    def heard_text(self, now: float) -> str:
        """What the user has heard by ``now``."""
        return heard_text(self.sentences, self.position(now))
