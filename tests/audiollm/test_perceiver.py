"""The AudioLLM perceiver on a tiny run trained in the test, fed by the real bundled Whisper tiny.en and
openSMILE (the tiny config uses Whisper's 384-d states and 80-bin log-mel, so nothing is faked but the LM)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from agent.config import PerceptionSettings
from perception.audiollm import (
    DualEncoderForEmotionReasoning,
    DualEncoderProcessor,
    ParalinguisticEncoderConfig,
    SemanticEncoderConfig,
)
from perception.audiollm.perceiver import AudioLLMPerceiver
from perception.base import PerceptionError
from perception.finetune.data import BatchSampler, SpeakerNormalizer, build_items
from perception.finetune.datasets import Clip
from perception.finetune.features import ClipFeatures
from perception.finetune.schedule import alternating_schedule
from perception.finetune.supervision import TemplateTeacher
from perception.finetune.trainer import TrainConfig, Trainer
from perception.grounding import verify
from perception.reasoning import acoustic_claim, build_reasoning
from perception.types import LABELS, Perception
from tests.audiollm.conftest import load_lm, make_tokenizer, tiny_config
from tests.conftest import CREMA_D

CLIP = CREMA_D / "audio" / "1001_IOM_ANG_XX.ogg"


def whisper_sized_config(lm_dir: Path):
    return tiny_config(
        lm_dir,
        semantic=SemanticEncoderConfig(hidden_size=384, stack=5),  # bundled Whisper tiny.en states
        paralinguistic=ParalinguisticEncoderConfig(
            n_mels=80, hidden_size=32, num_layers=1, num_heads=2, dropout=0.0
        ),
        acoustic_functionals=88,  # the aux head reads the turn's measured eGeMAPS functionals
    )


def train_tiny_run(out: Path, lm_dir: Path, pooled_layers: list[int] | None = None) -> Path:
    """A two-step run of the trainer on random features; returns its ``final/`` folder."""
    import torch

    torch.manual_seed(0)
    config = whisper_sized_config(lm_dir)
    config.semantic.pooled_layers = list(pooled_layers or [])
    processor = DualEncoderProcessor(config, make_tokenizer())
    model = DualEncoderForEmotionReasoning(config, load_lm(lm_dir))
    rng = np.random.default_rng(0)
    clips, feats = [], []
    for i, label in enumerate(["angry", "sad", "happy", "neutral"]):
        sem = rng.standard_normal((40, 384)).astype(np.float32)
        mel = rng.standard_normal((80, 80)).astype(np.float32)
        cues = {"pitch_mean": float(rng.normal()), "loudness_mean": float(rng.normal())}
        clips.append(Clip(Path(f"{i}.wav"), label, "kids are talking by the door", speaker=f"s{i % 2}"))
        acoustic = rng.standard_normal(88).astype(np.float32)
        feats.append(ClipFeatures(sem, mel, cues, "kids are talking by the door", acoustic))
        if pooled_layers:  # the aux head's input as the feature cache composes it
            layers = rng.standard_normal((len(pooled_layers), 768)).astype(np.float32)
            feats[-1].utterance = np.concatenate([acoustic, layers.reshape(-1)])
    pools, _ = build_items(clips, feats, TemplateTeacher(), LABELS)
    normalizer = SpeakerNormalizer.from_pools(config, pools)
    normalizer.norms.save(out)  # as `emo-agent train` does: the run folder's feature_norms.json
    cfg = TrainConfig(
        out, alternating_schedule(1, 1, 0, aux_steps=1), batch_size=2, lr=1e-2, save_every=0, progress=False
    )
    Trainer(model, BatchSampler(pools, processor, normalizer=normalizer, augment=True), cfg).train()
    return out / "final"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("run") / "tiny-run", tiny_lm_dir)


@pytest.fixture(scope="module")
def audio(crema_dir) -> np.ndarray:
    from perception.audio import load_audio

    return load_audio(crema_dir / "audio" / CLIP.name)


@pytest.fixture(scope="module")
def perceiver(run_dir) -> AudioLLMPerceiver:
    return AudioLLMPerceiver(run_dir=run_dir, max_new_tokens=24, warmup=False)


def test_perception_validates_and_cites_only_verified_evidence(perceiver, audio) -> None:
    baseline = perceiver.new_baseline()
    perception, cues = perceiver.perceive_with_cues(audio, baseline=baseline)
    Perception.model_validate(perception.model_dump())
    scores = perception.emotion.scores
    assert set(scores) == set(LABELS) and sum(scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert perception.emotion.label == max(scores, key=lambda k: scores[k])
    assert perception.model == f"dual-encoder:tiny-run@{perceiver.config.version}"
    assert {"asr", "encode", "acoustics", "estimate", "reason"} <= set(perception.timings_ms)
    assert cues and perception.evidence and perception.reasoning
    n_claims, n_verified = verify(perception, perception.transcript, cues)
    assert n_claims == n_verified == len(perception.evidence)
    assert baseline.n_turns == 1  # the turn was folded into the speaker's baseline


def test_garbage_generation_falls_back_to_measured_reasoning(perceiver, audio, monkeypatch) -> None:
    garbage = 'door door label: kids\ncue: pitch_mean +9.99 raised pitch\nquote: "not said at all" | x'
    monkeypatch.setattr(perceiver, "generate_text", lambda turn, label=None, context="": garbage)
    perception, cues = perceiver.perceive_with_cues(audio)
    expected = build_reasoning(
        perception.emotion.label,
        perception.emotion.scores,
        cues,
        perception.transcript,
        reference="typical speech",
    )
    assert perception.reasoning == expected.text
    assert perception.evidence == expected.evidence
    assert verify(perception, perception.transcript, cues) == (len(expected.evidence), len(expected.evidence))


@pytest.fixture(scope="module")
def first_turn(perceiver, audio) -> tuple[Perception, dict[str, float]]:
    return perceiver.perceive_with_cues(audio)


def _one_cue(first_turn) -> tuple[str, float, str]:
    perception, cues = first_turn
    cue, z = max(cues.items(), key=lambda kv: abs(kv[1]))
    return cue, z, perception.emotion.label


def test_unverified_generated_items_are_dropped(perceiver, audio, first_turn, monkeypatch) -> None:
    cue, z, label = _one_cue(first_turn)
    text = (
        f"label: {label}\ncue: {cue} {z:+.2f} {acoustic_claim(cue, z)}\n"
        'quote: "words nobody said" | invented\nreasoning: Invented words prove it.'
    )
    monkeypatch.setattr(perceiver, "generate_text", lambda turn, label=None, context="": text)
    perception, cues = perceiver.perceive_with_cues(audio)
    assert [e.cue for e in perception.evidence] == [cue]
    assert "Invented" not in perception.reasoning and cue in perception.reasoning
    assert verify(perception, perception.transcript, cues) == (1, 1)


def test_fully_verified_generation_is_kept_as_written(perceiver, audio, first_turn, monkeypatch) -> None:
    cue, z, label = _one_cue(first_turn)
    prose = f"The voice gives it away: {acoustic_claim(cue, z)}."
    text = f"label: {label}\ncue: {cue} {z:+.2f} {acoustic_claim(cue, z)}\nreasoning: {prose}"
    monkeypatch.setattr(perceiver, "generate_text", lambda turn, label=None, context="": text)
    perception = perceiver.perceive(audio)
    assert perception.reasoning == prose and len(perception.evidence) == 1


def test_turns_from_two_threads(perceiver, audio) -> None:
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: perceiver.perceive(audio), range(2))
    assert first.emotion.scores == second.emotion.scores and first.transcript == second.transcript


def test_typed_turn_uses_the_shared_text_path(perceiver) -> None:
    perception = perceiver.perceive_text("I hate this, I am furious, it is ridiculous")
    assert perception.emotion.label == "angry" and perception.model == perceiver.model_id
    assert {e.quote for e in perception.evidence} >= {"hate"}


def test_missing_run_says_how_to_train_one(tmp_path) -> None:
    for settings in (
        PerceptionSettings(estimator_path=str(tmp_path)),  # a folder without a run
        PerceptionSettings(estimator_path=str(tmp_path / "nowhere")),
    ):
        with pytest.raises(PerceptionError) as info:
            AudioLLMPerceiver(settings, warmup=False)
        message = str(info.value)
        assert "\n" not in message and "emo-agent train" in message
        assert "EMO_PERCEPTION__ESTIMATOR_PATH" in message


def test_registry_builds_audiollm_from_settings(run_dir) -> None:
    from perception.registry import build_perceiver, known_perceivers

    assert "audiollm" in known_perceivers()
    built = build_perceiver(PerceptionSettings(estimator="audiollm", estimator_path=str(run_dir)))
    assert isinstance(built, AudioLLMPerceiver) and built.model_id.startswith("dual-encoder:tiny-run@")
    with pytest.raises(PerceptionError, match="emo-agent train"):
        build_perceiver(PerceptionSettings(estimator="audiollm", estimator_path=str(run_dir.parent / "nope")))


def test_speaker_normalised_input_follows_the_conversation(perceiver, audio) -> None:
    """The model hears each turn against the speaker so far: the same audio is normalised differently
    after other turns, the baseline's stream statistics grow, and a copy of it (as the voice session
    takes for a turn that may be dropped) leaves the original untouched."""
    from voice.pipeline import copy_baseline as _copy_baseline

    baseline = perceiver.new_baseline()
    assert baseline.features is not None
    turn = perceiver.features(audio)
    alone = perceiver.normalized(turn, None)
    perceiver.perceive(audio, baseline=baseline)
    perceiver.perceive(audio[: len(audio) // 2] * 0.3, baseline=baseline)
    assert baseline.features.stats["semantic"].n_clips == 2
    snapshot = _copy_baseline(baseline)
    assert snapshot is not None
    later = perceiver.normalized(turn, snapshot)
    assert snapshot.features.stats["semantic"].n_clips == 3
    assert baseline.features.stats["semantic"].n_clips == 2
    assert not np.allclose(alone.paralinguistic, later.paralinguistic)
    assert abs(float(alone.semantic.mean())) < 5 and np.isfinite(later.semantic).all()
    baseline.reset()
    assert baseline.features.stats == {} and baseline.n_turns == 0


def test_speaker_normalised_run_without_its_norms_fails_in_one_line(run_dir, tmp_path) -> None:
    import shutil

    lone = tmp_path / "lone"
    shutil.copytree(run_dir, lone)  # the final folder alone: feature_norms.json lives in the run folder
    with pytest.raises(PerceptionError, match="feature_norms.json") as err:
        AudioLLMPerceiver(run_dir=lone, warmup=False)
    assert "\n" not in str(err.value)


def test_no_reasoning_tokens_means_no_generation(run_dir, audio, monkeypatch) -> None:
    """``reasoning_tokens=0``: the LM never generates; the reasoning is built from the measured cues."""
    quiet = AudioLLMPerceiver(PerceptionSettings(reasoning_tokens=0), run_dir=run_dir, warmup=False)

    def refuse(*args, **kwargs):
        raise AssertionError("generate must not run")

    monkeypatch.setattr(quiet.model, "generate", refuse)
    perception, cues = quiet.perceive_with_cues(audio)
    n_claims, n_verified = verify(perception, perception.transcript, cues)
    assert perception.evidence and n_claims == n_verified == len(perception.evidence)
    assert quiet.generation_stats.turns == 0 and quiet.generation_stats.to_json()["verified_share"] == 0.0


def test_evidence_without_prose_gets_a_sentence(perceiver, audio, first_turn, monkeypatch) -> None:
    """A generation cut off after its evidence lines (no ``reasoning:``) keeps the verified evidence and
    gets a sentence built from it: the reasoning is never empty."""
    cue, z, label = _one_cue(first_turn)
    text = f"label: {label}\ncue: {cue} {z:+.2f} {acoustic_claim(cue, z)}\n"
    monkeypatch.setattr(perceiver, "generate_text", lambda turn, label=None, context="": text)
    perception = perceiver.perceive(audio)
    assert perception.reasoning.strip() and cue in perception.reasoning
    assert [e.cue for e in perception.evidence] == [cue]


def test_generation_stats_count_what_the_lm_wrote(perceiver, audio, first_turn, monkeypatch) -> None:
    """The perceiver tallies the LM's own evidence: items written, items verified, turns kept as written."""
    from dataclasses import replace

    cue, z, label = _one_cue(first_turn)
    good = f"cue: {cue} {z:+.2f} {acoustic_claim(cue, z)}"
    wrong = f"cue: {cue} {z + 3:+.2f} {acoustic_claim(cue, z)}"  # a value the turn did not measure
    reasoning = f"reasoning: The speaker sounds {label}."
    stats = perceiver.generation_stats
    for text, items, verified, as_written in (
        (f"label: {label}\n{good}\n{wrong}\n{reasoning}", 2, 1, 0),
        (f"label: {label}\n{good}\n{reasoning}", 1, 1, 1),
    ):
        before = replace(stats)
        monkeypatch.setattr(perceiver, "generate_text", lambda turn, label=None, context="", text=text: text)
        perceiver.perceive(audio)
        assert (stats.turns, stats.items, stats.verified, stats.as_written) == (
            before.turns + 1,
            before.items + items,
            before.verified + verified,
            before.as_written + as_written,
        )
    assert 0 < stats.to_json()["verified_share"] <= 1


def test_a_run_whose_whisper_is_not_the_asr_model_reads_its_own_log_mel() -> None:
    """Under a 128-bin ASR model (large-v3) a tiny.en run still gets tiny.en's 80-bin log-mel and states."""
    from perception.asr import AsrResult
    from perception.audiollm.perceiver import WhisperTurnFeatures
    from perception.audiollm.whisper_layers import WhisperLayerStats

    class FakeWhisper:
        def __init__(self, n_mels: int, width: int) -> None:
            self.n_mels, self.width = n_mels, width

        def mel(self, audio):
            return np.zeros((self.n_mels, len(audio) // 160), dtype=np.float32)

        def encode_compact(self, audio, mel):
            assert mel.shape[0] == self.n_mels
            return np.zeros((mel.shape[1] // 2, self.width), dtype=np.float32)

        def analyze(self, audio):
            mel = self.mel(audio)
            return AsrResult("hello", mel, self.encode_compact(audio, mel))

    features = object.__new__(WhisperTurnFeatures)
    features.asr, features.encoder, features.mel_input = FakeWhisper(128, 1280), FakeWhisper(80, 384), True
    features.layer_stats = WhisperLayerStats.for_whisper("tiny.en", [2])  # reads the same 80-bin log-mel
    turn = features(np.zeros(16_000, dtype=np.float32))
    assert turn.paralinguistic.shape == (80, 100) and turn.semantic.shape == (50, 384)
    assert turn.transcript == "hello"
    assert turn.layers.shape == (1, 768) and "layers" in turn.timings_ms
    features.layer_stats = None
    features.encoder = features.asr  # the same Whisper: its pass is reused
    assert features(np.zeros(16_000, dtype=np.float32)).paralinguistic.shape == (128, 100)


def test_a_run_reading_pooled_whisper_layers_hears_them(tmp_path, tiny_lm_dir, audio, monkeypatch) -> None:
    """The perceiver pools tiny.en's second block over the turn and the aux head reads it."""
    folder = train_tiny_run(tmp_path / "layers-run", tiny_lm_dir, pooled_layers=[2])
    perceiver = AudioLLMPerceiver(run_dir=folder, max_new_tokens=0, warmup=False)
    assert perceiver.model.config.utterance_size == 88 + 768
    seen = []
    scores = perceiver.scores
    monkeypatch.setattr(perceiver, "scores", lambda turn: seen.append(turn.acoustic) or scores(turn))
    perception = perceiver.perceive(audio)
    assert "layers" in perception.timings_ms
    assert sum(perception.emotion.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert perceiver.model.aux_head[0].num_features == 2 * (384 + 32) + 88 + 768
    monkeypatch.setattr(perceiver.features.layer_stats, "stats", lambda mel: np.zeros((1, 768), np.float32))
    perceiver.perceive(audio)
    assert seen[0].shape == seen[1].shape == (88 + 768,)
    assert np.allclose(seen[0][:88], seen[1][:88]) and not np.allclose(seen[0][88:], seen[1][88:])
