"""The one configuration tree.

Every setting can be given in the environment with the prefix ``EMO_``; nested sections use ``__``
(for example ``EMO_PERCEPTION__ESTIMATOR=classical`` or ``EMO_VOICE__VAD_THRESHOLD=0.6``). A ``.env``
file in the working directory is read too. ``docs/configuration.md`` lists every field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "emo-agent"


class PerceptionSettings(BaseModel):
    """How speech becomes a :class:`perception.types.Perception`."""

    # Which emotion estimator runs after ASR and acoustic measurement. "audiollm" is the dual-encoder
    # AudioLLM (the shipped run in perception/assets/audiollm, trained on CREMA-D); "classical" is the
    # lighter eGeMAPS + Whisper-encoder logistic regression; other estimators register under their own name.
    estimator: str = "audiollm"
    # Path to the estimator's weights; empty means the ones shipped inside the package.
    estimator_path: str = ""
    # Most tokens the AudioLLM's LM writes for its evidence and reasoning per turn. 0: the reasoning is
    # built from the model's scores and the measured cues, with no generation. N > 0: the LM writes (before
    # the reply, about 100 ms per token on a 2-core CPU) and only what verifies against the turn is kept.
    # The shipped run's LM writing does not verify yet (docs/audiollm.md), so the default is 0.
    reasoning_tokens: int = 0
    # Whisper model: "tiny.en" (bundled, default), "base" (pip extra whisper-base) or a CTranslate2 model
    # directory / hub name where the hub can be reached.
    asr_model: str = "tiny.en"
    asr_beam_size: int = 1
    # Whisper decodes a turn as if padded with silence to its 30 s window, but only the speech is encoded:
    # the silence's encoder states are computed once and spliced after it (same WER, a quarter of the
    # cost on short turns). False runs the standard pass over the padded window every turn.
    asr_spliced_padding: bool = True
    # CPU threads for CTranslate2 and onnxruntime; 0 lets the library decide.
    cpu_threads: int = 0


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


class DialogueSettings(BaseModel):
    """The LangGraph dialogue graph and its LLM."""

    # "local": the bundled SmolLM2-135M-Instruct through transformers; "openai": any OpenAI-compatible
    # endpoint (vLLM, Ollama, llama.cpp server) at ``openai_base_url``.
    llm_backend: Literal["local", "openai"] = "local"
    local_model: str = "smollm2-135m"
    openai_base_url: str = "http://127.0.0.1:11434/v1"
    openai_model: str = "llama3.2"
    openai_api_key: str = "not-needed"
    max_new_tokens: int = 60
    temperature: float = 0.7
    seed: int = 0
    # Turns of history given to the LLM.
    history_turns: int = 6
    # Seconds a session's history lives in Redis after its last turn (0: forever).
    session_ttl_s: int = 7 * 24 * 3600
    # Dialogue extensions to load, as "module:function" (see docs/extending.md), e.g.
    # EMO_DIALOGUE__EXTENSIONS='["examples.checkin:register"]'.
    extensions: list[str] = Field(default_factory=list)
    # Also load extensions that installed packages declare under the "emo_agent.dialogue" entry point group.
    extension_entry_points: bool = True


class TrajectorySettings(BaseModel):
    """The research log of emotional trajectories (``agent.trajectory``, docs/research.md)."""

    # Consent used when ``session.start`` carries no ``consent`` field. True so researchers' logs work out of
    # the box; a deployment facing the public should set it false and let the client ask (opt-in).
    consent_default: bool = True
    # Seconds a session's trajectory (and any kept audio) lives after its last turn (0: forever).
    ttl_s: int = 7 * 24 * 3600
    # Keep each user turn's 16 kHz audio (WAV) beside its record. Off: audio is never stored.
    keep_audio: bool = False


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

    perception: PerceptionSettings = Field(default_factory=PerceptionSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    dialogue: DialogueSettings = Field(default_factory=DialogueSettings)
    trajectory: TrajectorySettings = Field(default_factory=TrajectorySettings)
