"""Per-speaker normalisation of the AudioLLM's input streams and the cheap augmentation of cached
features: the statistics, the corpus prior, the conversation order, and what training and run time see."""

from __future__ import annotations

import numpy as np
import pytest

from perception.audiollm import DualEncoderConfig
from perception.audiollm.speaker_norm import (
    FeatureNorms,
    SpeakerFeatures,
    StreamStats,
    normalize_clip,
    speaker_stats,
)
from perception.evaluation import conversation_order
from perception.finetune.data import SpeakerNormalizer, TrainItem, augment_streams
from perception.finetune.evaluation import EvalItem, running_normalized

CONFIG = DualEncoderConfig()  # whisper-ct2 states (T, 384), mel-cnn log-mel (80, T)


def _clip(rng, offset: float, scale: float = 1.0, frames: int = 50):
    sem = (rng.standard_normal((frames, 384)) * scale + offset).astype(np.float32)
    mel = (rng.standard_normal((80, 2 * frames)) * scale + offset).astype(np.float32)
    return sem, mel


def test_stream_stats_match_numpy():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 4)) * 3 + 1 for n in (5, 9, 2)]
    stats = StreamStats()
    for p in parts:
        stats.add(p)
    mean, var = stats.mean_var()
    allframes = np.concatenate(parts)
    assert stats.n_clips == 3 and stats.n_frames == 16
    np.testing.assert_allclose(mean, allframes.mean(0), atol=1e-9)
    np.testing.assert_allclose(var, allframes.var(0), atol=1e-9)
    with pytest.raises(ValueError):
        StreamStats().mean_var()


def test_a_speaker_is_heard_against_their_own_voice_as_turns_accumulate():
    rng = np.random.default_rng(1)
    corpus = [_clip(rng, 0.0) for _ in range(20)]
    norms = FeatureNorms.fit(CONFIG, corpus)
    loud = [_clip(rng, 3.0) for _ in range(30)]  # a speaker far from the corpus on every dimension
    stats = speaker_stats(CONFIG, loud)
    sem, mel = loud[0]
    alone_sem, _, _ = normalize_clip(CONFIG, norms, sem, mel)  # against the corpus only
    early_sem, _, _ = normalize_clip(CONFIG, norms, sem, mel, stats, n_clips=1)
    late_sem, late_mel, _ = normalize_clip(CONFIG, norms, sem, mel, stats, n_clips=1000)
    assert alone_sem.mean() > 2.5  # "everything is raised" when judged against typical speech
    assert abs(float(late_sem.mean())) < 0.2 and abs(float(late_mel.mean())) < 0.2  # own voice: centred
    assert late_sem.mean() < early_sem.mean() < alone_sem.mean()
    # half-way at k == prior (10): the mean is blended evenly
    half, _, _ = normalize_clip(CONFIG, norms, sem, mel, stats, n_clips=10)
    mean_c, var_c = norms.mean["semantic"], norms.var["semantic"]
    mean_s, var_s = stats["semantic"].mean_var()
    expected = (sem - (mean_c + mean_s) / 2) / np.sqrt((var_c + var_s) / 2 + 1e-5)
    np.testing.assert_allclose(half, expected, rtol=1e-4, atol=1e-4)
    assert late_mel.shape == mel.shape and late_sem.dtype == np.float32


def test_feature_norms_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    norms = FeatureNorms.fit(CONFIG, [_clip(rng, 0.5) for _ in range(3)])
    loaded = FeatureNorms.load(norms.save(tmp_path))
    for stream in ("semantic", "paralinguistic"):
        np.testing.assert_allclose(loaded.mean[stream], norms.mean[stream], atol=1e-5)
        np.testing.assert_allclose(loaded.var[stream], norms.var[stream], atol=1e-5)


def test_other_input_kinds_pass_through():
    cfg = DualEncoderConfig()
    cfg.paralinguistic.kind = "hf"  # waveform input: not normalised
    rng = np.random.default_rng(3)
    sem, _ = _clip(rng, 1.0)
    wave = rng.standard_normal(16_000).astype(np.float32)
    norms = FeatureNorms.fit(cfg, [(sem, wave)])
    assert set(norms.mean) == {"semantic"}
    out_sem, out_wave, none = normalize_clip(cfg, norms, sem, wave)
    assert out_wave is wave and not np.allclose(out_sem, sem) and none is None


def test_acoustic_descriptors_are_a_one_frame_stream_per_clip():
    """The aux head's eGeMAPS functionals are normalised like the streams: one frame per clip."""
    rng = np.random.default_rng(7)
    corpus = [(*_clip(rng, 0.0), rng.normal(0.0, 1.0, 88)) for _ in range(50)]
    norms = FeatureNorms.fit(CONFIG, corpus)
    assert norms.mean["acoustic"].shape == (88,)
    speaker = SpeakerFeatures(CONFIG, norms)
    high = [(*_clip(rng, 0.0), rng.normal(5.0, 1.0, 88)) for _ in range(40)]  # a voice far from the corpus
    for sem, mel, acoustic in high:
        speaker.add(sem, mel, acoustic)
    assert speaker.stats["acoustic"].n_clips == 40 and speaker.stats["acoustic"].n_frames == 40
    _, _, first = normalize_clip(CONFIG, norms, *high[0][:2], acoustic=high[0][2])
    _, _, late = speaker.normalize(*high[0])
    assert first.shape == late.shape == (88,) and first.dtype == np.float32
    assert first.mean() > 3.0 and abs(float(late.mean())) < 1.0  # judged against the speaker's own voice
    off = DualEncoderConfig(acoustic_functionals=0)  # a model without the input: passed through untouched
    assert "acoustic" not in FeatureNorms.fit(off, corpus).mean


def test_conversation_order_groups_speakers_and_shuffles_within():
    speakers = ["b", "a", None, "b", "a", "b", None, "a"]
    order = conversation_order(speakers, seed=0)
    assert sorted(order) == list(range(len(speakers)))
    assert [speakers[i] for i in order] == ["a", "a", "a", "b", "b", "b", None, None]
    assert order[-2:] == [2, 6]
    assert order == conversation_order(speakers, seed=0)
    assert any(conversation_order(speakers, seed=s) != order for s in range(1, 20))


def test_held_out_items_are_normalised_like_a_live_conversation():
    rng = np.random.default_rng(4)
    norms = FeatureNorms.fit(CONFIG, [_clip(rng, 0.0) for _ in range(10)])
    items = [
        EvalItem(*_clip(rng, 2.0 if i % 2 else -2.0), "angry", "hi" if i % 2 else "lo") for i in range(12)
    ]
    out = running_normalized(CONFIG, norms, items, seed=0)
    assert [o.speaker for o in out] == [i.speaker for i in items]  # same positions as the input
    # replay one speaker's conversation by hand: each clip against the clips before it and itself
    base = SpeakerFeatures(CONFIG, norms)
    for i in conversation_order([i.speaker for i in items], seed=0):
        if items[i].speaker != "hi":
            continue
        base.add(items[i].semantic, items[i].paralinguistic)
        sem, _, _ = base.normalize(items[i].semantic, items[i].paralinguistic)
        np.testing.assert_allclose(out[i].semantic, sem)
    late = [abs(float(o.semantic.mean())) for o in out]
    assert max(late) < 2.0  # both speakers pulled towards their own centre


def test_training_normaliser_draws_a_conversation_depth_per_clip():
    rng = np.random.default_rng(5)
    items = [
        TrainItem("emotion", *_clip(rng, 1.0 if i < 6 else -1.0), "sad", "sad", "x" if i < 6 else "y")
        for i in range(12)
    ]
    normalizer = SpeakerNormalizer.from_pools(CONFIG, {"emotion": items})
    assert set(normalizer.stats) == {"x", "y"} and normalizer.stats["x"]["semantic"].n_clips == 6
    a = normalizer(items[0].semantic, items[0].paralinguistic, "x", np.random.default_rng(0))
    b = normalizer(items[0].semantic, items[0].paralinguistic, "x", np.random.default_rng(0))
    np.testing.assert_array_equal(a[0], b[0])  # seeded: resumed runs see the same batches
    unknown = normalizer(items[0].semantic, items[0].paralinguistic, None, np.random.default_rng(0))
    assert unknown[0].shape == items[0].semantic.shape


def test_augmentation_changes_features_but_not_their_shape():
    rng = np.random.default_rng(6)
    sem, mel = _clip(rng, 0.0)
    mel = np.clip(mel * 0.3 - 0.5, -1.5, 1.5).astype(np.float32)  # Whisper's log-mel range
    out_sem, out_mel = augment_streams(CONFIG, sem, mel, np.random.default_rng(1))
    assert out_sem.shape == sem.shape and out_mel.shape == mel.shape
    assert np.isfinite(out_mel).all() and not np.allclose(out_mel, mel)
    assert out_mel.max() - out_mel.min() <= 2.0 + 1e-6  # Whisper's 80 dB (2.0 after scaling) dynamic range
    assert sem is not out_sem and np.isfinite(out_sem).all()
