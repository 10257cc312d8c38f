"""A trained AudioLLM run folder and what the perceiver reads from it besides the weights.

Owns where the shipped run lives (:data:`DEFAULT_RUN`), how a run is named in ``model_id``
(:func:`run_name`), the one-line message for a missing run, and loading the run's tokenizer, its
training-corpus cue norms (``norms.json``) and its stream statistics (``feature_norms.json``), each from
the folder or the run folder above it (where ``emo-agent train`` writes them).
"""

from __future__ import annotations

import json
from pathlib import Path

from perception.acoustics import CorpusNorms
from perception.audiollm.configuration import DualEncoderConfig
from perception.audiollm.speaker_norm import FEATURE_NORMS_NAME, FeatureNorms
from perception.base import PerceptionError
from perception.estimator import ClassicalEstimator

DEFAULT_RUN = Path(__file__).resolve().parents[1] / "assets" / "audiollm"
NORMS_NAME = "norms.json"  # cue norms of the training corpus, written by `emo-agent train`


def missing_run_message(path: Path) -> str:
    return (
        f"no trained AudioLLM at {path}: train one with `emo-agent train --data crema-d=PATH --out runs/x` "
        "and set EMO_PERCEPTION__ESTIMATOR_PATH=runs/x/final"
    )


def run_name(path: Path) -> str:
    """``runs/x/final`` -> ``x``; ``runs/x/checkpoint-200`` -> ``x/checkpoint-200``; the shipped run ->
    ``default``."""
    if path.resolve() == DEFAULT_RUN:
        return "default"
    if path.name == "final":
        return path.resolve().parent.name
    if path.name.startswith("checkpoint-"):
        return f"{path.resolve().parent.name}/{path.name}"
    return path.name


def load_tokenizer(path: Path, config: DualEncoderConfig):
    """The run folder's own tokenizer when it has one, else its base LM's (a transformers tokenizer)."""
    from transformers import AutoTokenizer

    from perception.audiollm.language_model import resolve_language_model

    has_own = (path / "tokenizer_config.json").is_file()
    return AutoTokenizer.from_pretrained(
        str(path) if has_own else resolve_language_model(config.language_model)
    )


def load_norms(path: Path) -> CorpusNorms:
    """The run's training-corpus cue norms (``norms.json`` in the folder or its run folder), else the
    shipped classical estimator's (typical speech)."""
    for candidate in (path / NORMS_NAME, path.parent / NORMS_NAME):
        if candidate.is_file():
            return CorpusNorms.from_json(json.loads(candidate.read_text()))
    return ClassicalEstimator.load().norms


def load_feature_norms(path: Path) -> FeatureNorms:
    """The training corpus's stream statistics (``feature_norms.json`` in the folder or its run folder)."""
    for candidate in (path / FEATURE_NORMS_NAME, path.parent / FEATURE_NORMS_NAME):
        if candidate.is_file():
            try:
                return FeatureNorms.load(candidate)
            except (OSError, ValueError, KeyError) as exc:
                raise PerceptionError(f"cannot read {candidate}: {exc}") from exc
    raise PerceptionError(
        f"the AudioLLM run at {path} normalises per speaker but has no {FEATURE_NORMS_NAME} "
        "(written by `emo-agent train` into the run folder)"
    )
