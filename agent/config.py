"""The one configuration tree.

Every setting can be given in the environment with the prefix ``EMO_``; nested sections use ``__``
(for example ``EMO_PERCEPTION__ESTIMATOR=classical`` or ``EMO_VOICE__VAD_THRESHOLD=0.6``). A ``.env``
file in the working directory is read too. ``docs/configuration.md`` lists every field.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dialogue.config import DialogueSettings
from perception.config import PerceptionQueueSettings, PerceptionSettings, default_cache_dir
from voice.config import VoiceSettings

__all__ = [
    "DialogueSettings",
    "PerceptionQueueSettings",
    "PerceptionSettings",
    "Settings",
    "TrajectorySettings",
    "VoiceSettings",
    "default_cache_dir",
]


class TrajectorySettings(BaseModel):
    """The research log of emotional trajectories (``agent.trajectory``, docs/research.md)."""

    # Consent used when ``session.start`` carries no ``consent`` field. True so researchers' logs work out of
    # the box; a deployment facing the public should set it false and let the client ask (opt-in).
    consent_default: bool = True
    # Seconds a session's trajectory (and any kept audio) lives after its last turn (0: forever).
    ttl_s: int = 7 * 24 * 3600
    # Keep each user turn's 16 kHz audio (WAV) beside its record. Off: audio is never stored.
    keep_audio: bool = False
    # While Redis is unreachable, turns wait in memory (in order) and are written when it is back: at most
    # this many turns and bytes (records as JSON plus kept audio; a 30 s turn's audio is about 1 MB).
    # A turn that does not fit is not logged (the client gets a trajectory_dropped warning). 0: no buffer.
    buffer_turns: int = Field(default=1000, ge=0)
    buffer_bytes: int = Field(default=64 << 20, ge=0)
    # Longest wait for one trajectory write before Redis counts as unreachable (a healthy write takes
    # about a millisecond; a turn's assistant.done waits for its records).
    write_timeout_s: float = Field(default=2.0, gt=0)


class Settings(BaseSettings):
    """Root of the configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix="EMO_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8765
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Converted models (e.g. the LLM's safetensors) are cached here.
    cache_dir: Path = Field(default_factory=default_cache_dir)
    log_level: str = "INFO"
    # glibc malloc arenas of the server and the workers (agent/memory.py; 0: glibc's default of 8 a core).
    # Two keep the resident memory flat over long sessions.
    malloc_arenas: int = Field(default=2, ge=0)
    # Seconds between returning freed memory to the system (malloc_trim) while serving (0: never).
    malloc_trim_s: float = Field(default=30.0, ge=0)

    perception: PerceptionSettings = Field(default_factory=PerceptionSettings)
    # Only read with EMO_PERCEPTION__MODE=redis-streams and by `emo-agent worker` (docs/scaling.md).
    perception_queue: PerceptionQueueSettings = Field(default_factory=PerceptionQueueSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    dialogue: DialogueSettings = Field(default_factory=DialogueSettings)
    trajectory: TrajectorySettings = Field(default_factory=TrajectorySettings)
