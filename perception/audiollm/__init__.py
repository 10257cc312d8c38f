"""Dual-encoder AudioLLM for speech emotion reasoning (after arXiv 2506.06820); see docs/audiollm.md.

A semantic Whisper encoder and a paralinguistic encoder, each with a frame-stacking MLP adapter, feed
audio tokens into a LoRA-adapted instruct LM that answers with a label, evidence and reasoning.
"""

from perception.audiollm.configuration import (
    DualEncoderConfig,
    LoraSettings,
    ParalinguisticEncoderConfig,
    ProjectorConfig,
    SemanticEncoderConfig,
    audio_token_counts,
)
from perception.audiollm.modeling import DualEncoderForEmotionReasoning, DualEncoderOutput
from perception.audiollm.parsing import ParsedGeneration, format_reasoning_target, parse_generation
from perception.audiollm.processing import DualEncoderProcessor, EncodedExample

__all__ = [
    "DualEncoderConfig",
    "DualEncoderForEmotionReasoning",
    "DualEncoderOutput",
    "DualEncoderProcessor",
    "EncodedExample",
    "LoraSettings",
    "ParalinguisticEncoderConfig",
    "ParsedGeneration",
    "ProjectorConfig",
    "SemanticEncoderConfig",
    "audio_token_counts",
    "format_reasoning_target",
    "parse_generation",
]
