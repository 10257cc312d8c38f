"""Corpus loaders on tiny fake folders in each corpus's released layout, and the feature cache."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from perception.finetune.datasets import load_corpus, load_crema_d, load_iemocap, load_meld, load_ravdess
from perception.finetune.features import ClipFeatures, FeatureCache


def _wav(path: Path) -> Path:
    """A short wav whose bytes differ per file name (feature caches are keyed by content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    sf.write(path, rng.uniform(-0.1, 0.1, 1600).astype(np.float32), 16000)
    return path


def test_manifest(tmp_path):
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "b.wav")
    (tmp_path / "m.csv").write_text(
        "path,emotion,transcript,actor\na.wav,anger,Hi there,7\nb.wav,surprise,,8\n"
    )
    clips, skipped = load_corpus("manifest", tmp_path / "m.csv")
    assert [(c.path.name, c.emotion, c.transcript, c.speaker) for c in clips] == [
        ("a.wav", "angry", "Hi there", "7")
    ]
    assert skipped == {"surprise": 1}


def test_crema_d_by_file_names(tmp_path):
    _wav(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    _wav(tmp_path / "AudioWAV" / "1002_IEO_SAD_HI.wav")
    clips, skipped = load_crema_d(tmp_path)
    assert [(c.emotion, c.transcript, c.speaker) for c in clips] == [
        ("angry", "Don't forget a jacket.", "1001"),
        ("sad", "It's eleven o'clock.", "1002"),
    ]
    assert not skipped


def test_ravdess(tmp_path):
    actor = tmp_path / "Actor_12"
    _wav(actor / "03-01-05-01-02-01-12.wav")  # audio-only speech, angry, "Dogs ..."
    _wav(actor / "03-01-02-01-01-01-12.wav")  # calm: skipped
    _wav(actor / "03-02-04-01-01-01-12.wav")  # song: left out by default
    _wav(actor / "01-01-04-01-01-01-12.wav")  # audio-video modality: not audio
    clips, skipped = load_ravdess(tmp_path)
    assert [(c.emotion, c.transcript, c.speaker) for c in clips] == [
        ("angry", "Dogs are sitting by the door.", "ravdess-12")
    ]
    assert skipped == {"calm": 1}
    assert len(load_ravdess(tmp_path, include_song=True)[0]) == 2


def test_iemocap(tmp_path):
    session = tmp_path / "Session1"
    (session / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (session / "dialog" / "transcriptions").mkdir(parents=True)
    (session / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt").write_text(
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
        "C-E2:\tNeutral;\t()\n"
        "[10.0100 - 11.3925]\tSes01F_impro01_M001\tfru\t[2.0000, 3.5000, 3.5000]\n"
        "[14.8872 - 18.0175]\tSes01F_impro01_M002\texc\t[3.5000, 3.5000, 3.0000]\n"
    )
    (session / "dialog" / "transcriptions" / "Ses01F_impro01.txt").write_text(
        "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\nSes01F_impro01_M002 [014.8872-018.0175]: Yes!\n"
    )
    wav_dir = session / "sentences" / "wav" / "Ses01F_impro01"
    for name in ("Ses01F_impro01_F000", "Ses01F_impro01_M001", "Ses01F_impro01_M002"):
        _wav(wav_dir / f"{name}.wav")
    clips, skipped = load_iemocap(tmp_path)
    assert [(c.path.stem, c.emotion, c.transcript, c.speaker) for c in clips] == [
        ("Ses01F_impro01_F000", "neutral", "Excuse me.", "Ses01F")
    ]
    assert skipped == {"fru": 1, "exc": 1}
    merged, _ = load_iemocap(tmp_path, merge_excited=True)
    assert [(c.emotion, c.speaker) for c in merged][-1] == ("happy", "Ses01M")


MELD_HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
)


def test_meld(tmp_path):
    (tmp_path / "train_sent_emo.csv").write_text(
        MELD_HEADER + '1,"Oh my God, he\'s lost it.",Monica,joy,positive,0,0,1,1,00:00:01,00:00:02\n'
        "2,What?,Ross,surprise,neutral,0,1,1,1,00:00:03,00:00:04\n"
        "3,No audio for me.,Joey,sadness,negative,1,0,1,1,00:00:05,00:00:06\n"
    )
    (tmp_path / "dev_sent_emo.csv").write_text(
        MELD_HEADER + "1,I'm scared.,Rachel,fear,negative,0,0,1,1,00:00:01,00:00:02\n"
    )
    _wav(tmp_path / "train_splits" / "dia0_utt0.wav")
    _wav(tmp_path / "train_splits" / "dia0_utt1.wav")
    _wav(tmp_path / "dev_splits_complete" / "dia0_utt0.wav")  # same name, other split
    clips, skipped = load_meld(tmp_path)
    assert [(c.split, c.emotion, c.speaker, c.path.parent.name) for c in clips] == [
        ("train", "happy", "Monica", "train_splits"),
        ("dev", "fear", "Rachel", "dev_splits_complete"),
    ]
    assert skipped == {"surprise": 1, "<missing audio>": 1}


def test_feature_cache_computes_once(tmp_path):
    clips, _ = load_crema_d(_wav(tmp_path / "c" / "1001_DFA_ANG_XX.wav").parent)
    calls = []

    def extractor(clip):
        calls.append(clip.path)
        return ClipFeatures(
            np.ones((5, 4), np.float32), np.ones((8, 10), np.float32), {"pitch_mean": 3.0}, "hi"
        )

    cache = FeatureCache(tmp_path / "cache", extractor, signature="test")
    assert cache.warm(clips, progress=False) == clips
    assert cache.warm(clips, progress=False) == clips
    got = cache.get(clips[0])
    assert len(calls) == 1 and got.semantic.shape == (5, 4) and got.cues == {"pitch_mean": 3.0}
    assert got.transcript == "hi" and got.semantic.dtype == np.float32


def test_feature_cache_is_keyed_by_content(tmp_path):
    """A copied corpus (new path, new mtime) hits the cache; an edited file does not."""
    import shutil

    original = _wav(tmp_path / "a" / "1001_DFA_ANG_XX.wav")
    calls = []

    def extractor(clip):
        calls.append(clip.path)
        return ClipFeatures(np.ones((5, 4), np.float32), np.ones((8, 10), np.float32), {}, "hi")

    cache = FeatureCache(tmp_path / "cache", extractor, signature="test")
    cache.warm(load_crema_d(original.parent)[0], progress=False)
    copy = tmp_path / "b" / original.name
    copy.parent.mkdir()
    shutil.copy(original, copy)
    cache.warm(load_crema_d(copy.parent)[0], progress=False)
    assert len(calls) == 1
    sf.write(copy, np.full(1600, 0.05, dtype=np.float32), 16000)
    cache.warm(load_crema_d(copy.parent)[0], progress=False)
    assert len(calls) == 2


def test_feature_cache_completes_entries_without_acoustic_descriptors(tmp_path):
    clips, _ = load_crema_d(_wav(tmp_path / "c" / "1001_DFA_ANG_XX.wav").parent)

    class Extractor:
        signature = "test"

        def __call__(self, clip):
            return ClipFeatures(np.ones((5, 4), np.float32), np.ones((8, 10), np.float32), {}, "hi")

        def acoustic(self, clip):
            return np.arange(88, dtype=np.float32)

    cache = FeatureCache(tmp_path / "cache", Extractor())
    assert cache.get(clips[0]).acoustic is None  # written as an extractor without descriptors writes it
    completed = cache.get(clips[0])  # read back: the missing descriptors are measured and stored
    assert np.array_equal(completed.acoustic, np.arange(88))
    Extractor.acoustic = None  # no longer able to measure: the stored ones are read
    assert np.array_equal(FeatureCache(tmp_path / "cache", Extractor()).get(clips[0]).acoustic, np.arange(88))


def test_unusable_clips_are_left_out_not_fatal(tmp_path):
    from perception.base import AudioError

    folder = tmp_path / "c"
    _wav(folder / "1001_DFA_ANG_XX.wav")
    _wav(folder / "1002_DFA_SAD_XX.wav")
    clips, _ = load_crema_d(folder)

    def extractor(clip):
        if "1002" in clip.path.name:
            raise AudioError("audio is silent")
        return ClipFeatures(np.ones((5, 4), np.float32), np.ones((8, 10), np.float32), {}, "hi")

    cache = FeatureCache(tmp_path / "cache", extractor, signature="test")
    usable = cache.warm(clips, progress=False)
    assert [c.path.name for c in usable] == ["1001_DFA_ANG_XX.wav"]


def test_degraded_copies_are_heard_by_their_own_speaker_baseline(tmp_path):
    from perception.finetune.datasets import degraded_copies

    for name in ("1001_DFA_ANG_XX.wav", "1001_IEO_SAD_HI.wav", "1002_DFA_HAP_XX.wav"):
        _wav(tmp_path / "c" / name)
    clips, _ = load_crema_d(tmp_path / "c")
    copies = degraded_copies(clips, ["reverb", "telephone"], copies=2, seed=0)
    assert len(copies) == 2 * len(clips)
    assert {c.condition for c in copies} <= {"reverb", "telephone"}
    for copy in copies:
        original = next(c for c in clips if c.path == copy.path)
        assert copy.speaker == f"{original.speaker}@{copy.condition}"
        assert (copy.emotion, copy.transcript) == (original.emotion, original.transcript)
    assert degraded_copies(clips, ["reverb", "telephone"], copies=2, seed=0) == copies  # reproducible
    assert degraded_copies(clips, [], copies=1) == []
    import pytest

    with pytest.raises(ValueError, match="unknown conditions \\['underwater'\\]"):
        degraded_copies(clips, ["underwater"])
    with pytest.raises(ValueError, match="unknown conditions \\['clean'\\]"):
        degraded_copies(clips, ["clean"])
    with pytest.raises(ValueError, match="3 copies per clip need as many conditions, got 2"):
        degraded_copies(clips, ["reverb", "telephone", "reverb"], copies=3)
    for clip in clips:  # each copy of a clip is heard a different way
        assert {c.condition for c in copies if c.path == clip.path} == {"reverb", "telephone"}


def test_a_degraded_copy_has_its_own_cache_entry_and_degraded_audio(tmp_path):
    from dataclasses import replace

    from perception.finetune.features import clip_audio

    path = tmp_path / "c" / "1001_DFA_ANG_XX.wav"
    path.parent.mkdir(parents=True)
    t = np.arange(16_000) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16_000)  # 1 s
    clips, _ = load_crema_d(path.parent)
    clean = clips[0]
    faster = replace(clean, condition="speed-1.1", speaker="1001@speed-1.1")
    seen = []

    def extractor(clip):
        seen.append(len(clip_audio(clip)))
        return ClipFeatures(np.ones((5, 4), np.float32), np.ones((8, 10), np.float32), {}, "hi")

    cache = FeatureCache(tmp_path / "cache", extractor, signature="test")
    assert cache.key(clean) != cache.key(faster)
    cache.warm([clean, faster], progress=False)
    assert seen[0] == 16_000 and abs(seen[1] - 16_000 / 1.1) <= 2  # the copy was heard 10 % faster
    noisy = replace(clean, condition="noise-15db")
    np.testing.assert_array_equal(clip_audio(noisy), clip_audio(noisy))  # the same noise every time
    assert not np.array_equal(clip_audio(noisy), clip_audio(clean))
