"""Manifest reading, metrics and the eval report's exact keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perception.base import Perceiver, SpeakerBaseline
from perception.evaluation import (
    ManifestError,
    confusion_matrix,
    evaluate,
    format_report,
    metrics_from_confusion,
    normalize_text,
    read_manifest,
    word_error_rate,
)
from perception.types import LABELS, Emotion, Evidence, Perception

REPORT_KEYS = {
    "n",
    "labels",
    "ua",
    "wa",
    "macro_f1",
    "confusion",
    "wer",
    "grounding",
    "skipped",
    "rtf",
    "model",
}


def test_metrics_on_hand_built_confusion() -> None:
    true = ["angry"] * 4 + ["sad"] * 2
    pred = ["angry", "angry", "angry", "sad", "sad", "angry"]
    cm = confusion_matrix(true, pred)
    assert cm[LABELS.index("angry"), LABELS.index("sad")] == 1
    m = metrics_from_confusion(cm)
    assert m["wa"] == pytest.approx(4 / 6)
    assert m["ua"] == pytest.approx((3 / 4 + 1 / 2) / 2)  # classes without examples are left out
    f1_angry = 2 * (3 / 4) * (3 / 4) / (3 / 4 + 3 / 4)
    f1_sad = 2 * (1 / 2) * (1 / 2) / 1.0
    assert m["macro_f1"] == pytest.approx((f1_angry + f1_sad) / 2)


def test_manifest_paths_aliases_and_skips(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "path,emotion,transcript,speaker\n"
        "a.wav,Anger,hello there,s1\n"
        "/abs/b.wav,joy,,s2\n"
        "c.wav,calm,,s1\n"
        "d.wav,surprise,,s1\n"
        "e.wav,surprise,,s1\n"
    )
    rows, skipped = read_manifest(tmp_path / "m.csv")
    assert [(r.path, r.emotion) for r in rows] == [
        (tmp_path / "a.wav", "angry"),
        (Path("/abs/b.wav"), "happy"),
    ]
    assert rows[0].transcript == "hello there" and rows[1].transcript is None and rows[0].speaker == "s1"
    assert skipped == {"calm": 1, "surprise": 2}


def test_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("file,label\nx.wav,angry\n")
    with pytest.raises(ManifestError, match="lacks column.*path.*emotion") as info:
        read_manifest(tmp_path / "bad.csv")
    assert "\n" not in str(info.value)


def test_wer_normalizes_case_and_punctuation() -> None:
    assert normalize_text("Don't forget, a JACKET!") == "don't forget a jacket"
    assert word_error_rate(["Don't forget a jacket."], ["don't forget the jacket"]) == pytest.approx(0.25)
    assert word_error_rate(["It's eleven o'clock."], ["It's 11 o'clock!"]) == 0.0
    assert word_error_rate([""], ["x"]) is None


class FakePerceiver(Perceiver):
    """Predicts 'angry' for loud clips and 'sad' otherwise; one right and one wrong claim per clip."""

    model_id = "fake@0"

    def new_baseline(self) -> SpeakerBaseline:  # pragma: no cover - not used
        raise NotImplementedError

    def perceive(self, audio, sample_rate=16_000, baseline=None) -> Perception:
        return self.perceive_with_cues(audio)[0]

    def perceive_with_cues(self, audio, sample_rate=16_000, baseline=None):
        loud = float(np.max(np.abs(audio))) > 0.5
        label = "angry" if loud else "sad"
        scores = {lab: float(lab == label) for lab in LABELS}
        evidence = [
            Evidence(kind="acoustic", cue="loudness_mean", value=2.0, claim="louder voice"),
            Evidence(kind="lexical", quote="never said", claim="made up"),
        ]
        perception = Perception(
            transcript="hello there",
            emotion=Emotion(label=label, scores=scores, valence=0.0, arousal=0.0),
            reasoning="x",
            evidence=evidence,
            model=self.model_id,
        )
        return perception, {"loudness_mean": 2.0}


def test_evaluate_report_has_exactly_the_contract_keys(tmp_path: Path) -> None:
    t = np.arange(8000) / 16_000
    sf.write(tmp_path / "loud.wav", 0.9 * np.sin(2 * np.pi * 200 * t), 16_000)
    sf.write(tmp_path / "quiet.wav", 0.1 * np.sin(2 * np.pi * 200 * t), 16_000)
    (tmp_path / "broken.wav").write_text("nope")
    (tmp_path / "m.csv").write_text(
        "path,emotion,transcript\nloud.wav,angry,Hello there!\nquiet.wav,happy,hello\n"
        "broken.wav,sad,\nloud.wav,surprised,\n"
    )
    rows, skipped = read_manifest(tmp_path / "m.csv")
    report = evaluate(FakePerceiver(), rows, progress=False, skipped=skipped)
    assert set(report) == REPORT_KEYS
    assert report["n"] == 2 and report["skipped"] == 2
    assert report["labels"] == list(LABELS)
    assert report["wa"] == 0.5 and report["ua"] == 0.5
    assert report["confusion"]["happy"]["sad"] == 1
    assert set(report["confusion"]) == set(LABELS) and all(
        set(r) == set(LABELS) for r in report["confusion"].values()
    )
    assert report["wer"] == pytest.approx(1 / 3, abs=1e-3)
    assert report["grounding"] == {"claims": 4, "verified": 0.5}
    assert report["rtf"] >= 0 and report["model"] == "fake@0"
    text = format_report(report)
    assert "UA" in text and "angry" in text
    assert evaluate(FakePerceiver(), rows, limit=1, progress=False)["n"] == 1


class _CountingBaseline(SpeakerBaseline):
    def __init__(self, speaker_log: list) -> None:
        self.turns = 0
        self.log = speaker_log

    def reset(self) -> None:
        self.turns = 0


class ConversationPerceiver(FakePerceiver):
    """Records which baseline each clip was perceived against."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []  # (clip name, id of its baseline)
        self.baselines: list[_CountingBaseline] = []

    def new_baseline(self) -> SpeakerBaseline:
        self.baselines.append(_CountingBaseline([]))
        return self.baselines[-1]

    def perceive_with_cues(self, audio, sample_rate=16_000, baseline=None):
        if baseline is not None:
            baseline.turns += 1
        self.seen.append((float(np.max(np.abs(audio))), None if baseline is None else id(baseline)))
        return super().perceive_with_cues(audio, sample_rate, baseline)


def test_each_speaker_is_one_conversation_with_a_running_baseline(tmp_path: Path) -> None:
    t = np.arange(8000) / 16_000
    for i, amp in enumerate((0.9, 0.2, 0.8, 0.3, 0.7)):
        sf.write(tmp_path / f"c{i}.wav", amp * np.sin(2 * np.pi * 200 * t), 16_000)
    (tmp_path / "m.csv").write_text(
        "path,emotion,speaker\nc0.wav,angry,A\nc1.wav,sad,B\nc2.wav,angry,A\nc3.wav,sad,B\nc4.wav,angry,\n"
    )
    rows, _ = read_manifest(tmp_path / "m.csv")
    perceiver = ConversationPerceiver()
    report = evaluate(perceiver, rows, progress=False)
    assert report["n"] == 5 and report["ua"] == 1.0
    assert len(perceiver.baselines) == 2 and [b.turns for b in perceiver.baselines] == [2, 2]
    by_speaker = [b for _, b in perceiver.seen]
    assert by_speaker[0] == by_speaker[1] != by_speaker[2] == by_speaker[3] and by_speaker[4] is None
    alone = ConversationPerceiver()
    evaluate(alone, rows, progress=False, speaker_baseline=False)
    assert alone.baselines == [] and all(b is None for _, b in alone.seen)
