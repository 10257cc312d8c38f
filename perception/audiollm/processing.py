"""Prompts, targets and batches for the dual-encoder AudioLLM.

Owns :class:`DualEncoderProcessor`: it adds the audio placeholder to the tokenizer (recording its id in
the config), builds chat prompts holding exactly the number of placeholders
:func:`~perception.audiollm.configuration.audio_token_counts` gives, masks labels (-100 on the prompt and
audio positions) and pads batches (right for training, left for generation).

Tasks and their targets:

* ``"asr"``: the transcript.
* ``"emotion"``: the label.
* ``"emotion_reasoning"``: label + evidence + reasoning in the format of
  :mod:`perception.audiollm.parsing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from perception.audiollm.configuration import DualEncoderConfig, audio_token_counts
from perception.audiollm.modeling import IGNORE_INDEX

Task = Literal["asr", "emotion", "emotion_reasoning"]
TASKS: tuple[Task, ...] = ("asr", "emotion", "emotion_reasoning")
SYSTEM_PROMPT = "You listen to speech and describe what was said and how the speaker feels."


def task_instruction(task: Task, labels: list[str]) -> str:
    choices = ", ".join(labels)
    if task == "asr":
        return "Transcribe the speech exactly."
    if task == "emotion":
        return f"Which emotion does the speaker express? Answer with one word: {choices}."
    if task == "emotion_reasoning":
        return (
            f"Which emotion does the speaker express ({choices})? Answer with lines 'label:', then the "
            "evidence ('cue:' measured voice cues, 'quote:' words), then 'reasoning:'."
        )
    raise ValueError(f"unknown task {task!r} (known: {', '.join(TASKS)})")


MAX_CONTEXT_CUES = 8


def utterance_features(
    config: DualEncoderConfig, functionals: np.ndarray | None, layer_stats: np.ndarray | None = None
) -> np.ndarray | None:
    """The aux head's utterance-level input, ``(config.utterance_size,)``: the eGeMAPS functionals
    (``acoustic_functionals``), then the pooled states of ``semantic.pooled_layers``, one row per layer
    (:class:`~perception.audiollm.whisper_layers.WhisperLayerStats`). ``None`` for a model that reads
    none; a missing or mis-sized part is a ``ValueError``."""
    if not config.utterance_size:
        return None
    parts = []
    if config.acoustic_functionals:
        if functionals is None or np.shape(functionals) != (config.acoustic_functionals,):
            got = None if functionals is None else np.shape(functionals)
            raise ValueError(
                f"eGeMAPS functionals of shape {got}, the model reads ({config.acoustic_functionals},)"
            )
        parts.append(np.asarray(functionals, dtype=np.float32))
    layers = config.semantic.pooled_layers
    if layers:
        expected = (len(layers), 2 * config.semantic.hidden_size)
        if layer_stats is None or np.shape(layer_stats) != expected:
            got = None if layer_stats is None else np.shape(layer_stats)
            raise ValueError(
                f"pooled layer states of shape {got}, the model reads {expected} (layers {layers})"
            )
        parts.append(np.asarray(layer_stats, dtype=np.float32).reshape(-1))
    return np.concatenate(parts)


def reasoning_context(cue_z: dict[str, float], transcript: str) -> str:
    """The ``emotion_reasoning`` prompt's text about the turn (``config.reasoning_context``): its cues
    by distance from the reference (the line an evidence item would quote) and its transcript."""
    from perception.acoustics import CUES
    from perception.reasoning import acoustic_claim

    ranked = sorted(((c, z) for c, z in cue_z.items() if c in CUES), key=lambda kv: -abs(kv[1]))
    lines = [f"measured: {c} {z:+.2f} {acoustic_claim(c, z)}" for c, z in ranked[:MAX_CONTEXT_CUES]]
    words = " ".join(transcript.split())
    return "\n".join(lines + [f'transcript: "{words}"'])


@dataclass
class EncodedExample:
    """One example as token ids and audio features. ``labels`` is None for prompts (inference)."""

    input_ids: list[int]
    labels: list[int] | None
    semantic_features: np.ndarray  # whisper-ct2: (T, C) states; whisper-hf: (n_mels, T) log-mel
    paralinguistic_features: np.ndarray  # mel-cnn: (n_mels, T) log-mel; hf: (samples,)
    emotion_label: int = IGNORE_INDEX
    acoustic_features: np.ndarray | None = None  # (config.utterance_size,) for an aux head that reads them


class DualEncoderProcessor:
    """Tokenizer + config -> model inputs. Mutates ``config.audio_token_id`` to the placeholder's id."""

    def __init__(self, config: DualEncoderConfig, tokenizer: Any) -> None:
        self.config = config
        self.tokenizer = tokenizer
        if config.audio_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [config.audio_token]})
        token_id = int(tokenizer.convert_tokens_to_ids(config.audio_token))
        if config.audio_token_id is not None and config.audio_token_id != token_id:
            raise ValueError(
                f"tokenizer gives {config.audio_token!r} id {token_id}, "
                f"the config recorded {config.audio_token_id}"
            )
        config.audio_token_id = token_id
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        unk = getattr(tokenizer, "unk_token_id", None)
        self.end_id: int = int(end) if isinstance(end, int) and end != unk else int(tokenizer.eos_token_id)
        self.pad_id: int = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id)
        self._prompt_parts: dict[str, tuple[list[int], list[int]]] = {}

    # -- prompts --------------------------------------------------------------------------------------
    def _render(self, instruction: str) -> tuple[str, str]:
        """Chat text before and after the audio block (the model's generation prompt included)."""
        marker = "\x00AUDIO\x00"
        user = f"{marker}\n{instruction}"
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"System: {SYSTEM_PROMPT}\nUser: {user}\nAssistant:"
        before, after = text.split(marker)
        return before, after

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, task: Task, n_audio_tokens: int, context: str = "") -> list[int]:
        """Prompt ids with ``n_audio_tokens`` placeholders; ``context`` (text about the turn) follows the
        instruction."""
        parts = None if context else self._prompt_parts.get(task)
        if parts is None:
            instruction = task_instruction(task, self.config.labels) + (f"\n{context}" if context else "")
            before, after = self._render(instruction)
            parts = (self._ids(before), self._ids(after))
            if not context:  # tokenised once per task: training encodes thousands of prompts
                self._prompt_parts[task] = parts
        return parts[0] + [int(self.config.audio_token_id)] * n_audio_tokens + parts[1]  # type: ignore[arg-type]

    def target_ids(self, target: str) -> list[int]:
        return self._ids(target.strip()) + [self.end_id]

    def label_token_ids(self) -> list[list[int]]:
        """Token ids of each label as the ``emotion`` task's answer (used by label-likelihood scoring)."""
        return [self.target_ids(label)[:-1] for label in self.config.labels]

    def encode(
        self,
        task: Task,
        semantic_features: np.ndarray,
        paralinguistic_features: np.ndarray,
        target: str | None = None,
        emotion: str | None = None,
        prefix: str = "",
        acoustic: np.ndarray | None = None,
        context: str = "",
    ) -> EncodedExample:
        """A prompt with the right number of placeholders; with ``target``, its ids and masked labels.
        ``prefix`` (prompts only) starts the answer, e.g. ``"label: sad\n"`` to have the model explain a
        given label. ``acoustic``: the clip's ``(config.utterance_size,)`` utterance descriptors
        (:func:`utterance_features`; aux head input).
        ``context``: :func:`reasoning_context` of the turn, read by ``emotion_reasoning`` prompts of a
        ``reasoning_context`` model (ignored otherwise)."""
        n_sem, n_para = audio_token_counts(
            self.config,
            int(semantic_features.shape[0 if self.config.semantic.kind == "whisper-ct2" else -1]),
            int(paralinguistic_features.shape[-1]),
        )
        use_context = context and task == "emotion_reasoning" and self.config.reasoning_context
        prompt = self.prompt_ids(task, n_sem + n_para, context if use_context else "")
        if prefix:
            if target is not None:
                raise ValueError("prefix is for prompts; put it in the target when training")
            prompt = prompt + self._ids(prefix)
        labels = None
        if target is not None:
            answer = self.target_ids(target)
            labels = [IGNORE_INDEX] * len(prompt) + answer
            prompt = prompt + answer
        emotion_index = self.config.labels.index(emotion) if emotion in self.config.labels else IGNORE_INDEX
        if not self.config.utterance_size:
            acoustic = None  # this model does not read them
        if acoustic is not None and acoustic.shape != (self.config.utterance_size,):
            raise ValueError(
                f"acoustic descriptors have shape {acoustic.shape}, the model reads "
                f"({self.config.utterance_size},)"
            )
        return EncodedExample(
            prompt, labels, semantic_features, paralinguistic_features, emotion_index, acoustic
        )

    # -- batches --------------------------------------------------------------------------------------
    def collate(
        self, examples: list[EncodedExample], padding_side: Literal["right", "left"] = "right"
    ) -> dict[str, torch.Tensor]:
        """Pad a list of examples into model inputs (feature time axes zero-padded, lengths recorded)."""
        width = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e.input_ids)
            span = slice(width - n, width) if padding_side == "left" else slice(0, n)
            ids[i, span] = torch.tensor(e.input_ids)
            mask[i, span] = 1
            if e.labels is not None:
                labels[i, span] = torch.tensor(e.labels)
        time_axis = 0 if self.config.semantic.kind == "whisper-ct2" else -1
        sem, sem_len = _pad_time([e.semantic_features for e in examples], time_axis)
        para, para_len = _pad_time([e.paralinguistic_features for e in examples], -1)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "semantic_features": sem,
            "paralinguistic_features": para,
            "semantic_lengths": sem_len,
            "paralinguistic_lengths": para_len,
            "emotion_labels": torch.tensor([e.emotion_label for e in examples], dtype=torch.long),
        }
        if any(e.labels is not None for e in examples):
            batch["labels"] = labels
        acoustic = [e.acoustic_features for e in examples]
        if any(a is not None for a in acoustic):
            if any(a is None for a in acoustic):
                raise ValueError("either every example of a batch has acoustic descriptors or none has")
            batch["acoustic_features"] = torch.from_numpy(np.stack(acoustic).astype(np.float32))
        return batch

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in token_ids.tolist()]


def _pad_time(arrays: list[np.ndarray], axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack arrays whose ``axis`` (time) differs, zero-padding it; returns the batch and the lengths."""
    lengths = [a.shape[axis] for a in arrays]
    longest = max(lengths)
    padded = []
    for a in arrays:
        pad = [(0, 0)] * a.ndim
        pad[axis] = (0, longest - a.shape[axis])
        padded.append(np.pad(np.asarray(a, dtype=np.float32), pad))
    return torch.from_numpy(np.stack(padded)), torch.tensor(lengths, dtype=torch.long)
