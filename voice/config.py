"""The voice section of the configuration tree (``EMO_VOICE__*``).

A plain model: the voice package never reads the environment; ``agent.config.Settings`` composes this
section into the one ``EMO_`` tree and passes it in.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class VoiceSettings(BaseModel):
    """Turn-taking, barge-in and speech output."""

    # Silero speech probability above which a chunk counts as speech.
    vad_threshold: float = 0.5
    # Silence that ends a turn. Shorter answers faster but cuts people who pause mid-sentence.
    min_silence_ms: int = 500
    # Speech needed before a turn starts (filters clicks and coughs).
    min_speech_ms: int = 200
    # Audio kept from before the detected start, so the first syllable is not clipped.
    pre_roll_ms: int = 300
    # A turn is cut at this length even without a pause.
    max_turn_s: float = 30.0
    # Speech during a reply that lasts this long interrupts the reply (barge-in).
    barge_in_ms: int = 300
    # Silence after which the turn's perception and reply start speculatively, while the VAD waits for
    # min_silence_ms to confirm the turn ended; nothing of it is sent before then, and speech resuming
    # drops it unheard. 0: no speculation (work starts when the turn ends).
    speculative_pause_ms: int = Field(default=200, ge=0)
    # Stream the reply: speak its first clause while the rest is written. False: the whole reply text is
    # generated before speech starts (the sequential reference the latency bench compares against).
    stream_reply: bool = True
    # Largest accepted JSON text frame and typed turn.
    max_text_chars: int = 2000
    max_message_bytes: int = 1 << 20
    # The reply's first spoken piece may end at a clause break (",", ";", ":", a dash) once it has this
    # many characters, so speech starts before the whole first sentence is written and synthesised.
    # 0: speak whole sentences only.
    first_clause_chars: int = Field(default=40, ge=0)
    # Piper voice: empty means the bundled en_US-joe-medium.
    tts_voice: str = ""
    tts_enabled: bool = True
