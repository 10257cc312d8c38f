"""Training clips from a manifest CSV or from four emotional speech corpora in their released layouts.

Every loader returns ``(clips, skipped)``: :class:`Clip` records with canonical labels (see
:mod:`perception.types`) and a count of raw labels that have no canonical equivalent (reported, not
guessed). Corpora:

* manifest: the project's CSV (:func:`perception.evaluation.read_manifest`).
* CREMA-D: its ``manifest.csv`` when present, else file names ``1001_DFA_ANG_XX.wav`` (sentence codes map
  to the 12 fixed sentences).
* RAVDESS: ``Actor_XX/03-01-EE-II-SS-RR-AA.wav`` (modality 03 = audio only; vocal channel 01 = speech,
  02 = song; EE emotion; SS statement).
* IEMOCAP: ``Session*/dialog/EmoEvaluation/*.txt`` (labels), ``Session*/dialog/transcriptions/*.txt``,
  audio in ``Session*/sentences/wav/<dialog>/<utterance>.wav``. ``exc`` (excited) is skipped unless
  ``merge_excited`` (the common 4-class protocol folds it into happy).
* MELD: ``{train,dev,test}_sent_emo.csv`` + one audio file per utterance named ``dia{D}_utt{U}.*``
  anywhere under the root (wav/flac/ogg extracted from the released mp4; mp4 is read where the audio
  backend can).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from perception.types import canonical_label

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".mp4")


@dataclass(frozen=True)
class Clip:
    path: Path
    emotion: str | None  # canonical label; None for clips used only by speech tasks
    transcript: str | None = None
    speaker: str | None = None
    corpus: str = "manifest"
    split: str = "train"
    # How the clip is heard: "clean" (as recorded) or a perception.degradations condition applied to the
    # audio before its features are computed (a training copy; see :func:`degraded_copies`).
    condition: str = "clean"


def degraded_copies(clips: list[Clip], conditions: list[str], copies: int = 1, seed: int = 0) -> list[Clip]:
    """``copies`` copies of every clip, each heard in a different condition drawn (with ``seed``) from
    ``conditions`` (:data:`perception.degradations.CONDITIONS` other than "clean"). A copy's speaker is
    ``speaker@condition``: at run time a conversation is heard through one room and microphone
    throughout, so the speaker baseline a copy is standardised against is the one of that speaker heard
    that way."""
    import numpy as np

    from perception.degradations import CONDITIONS

    conditions = list(dict.fromkeys(conditions))
    known = [c for c in CONDITIONS if c != "clean"]
    unknown = sorted(set(conditions) - set(known))
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; known: {', '.join(known)}")
    if not conditions or copies <= 0:
        return []
    if copies > len(conditions):  # a clip heard twice the same way would be the same copy
        raise ValueError(f"{copies} copies per clip need as many conditions, got {len(conditions)}")
    rng = np.random.default_rng(seed)
    out = []
    for clip in clips:
        for condition in rng.choice(conditions, size=copies, replace=False):
            speaker = f"{clip.speaker}@{condition}" if clip.speaker else None
            out.append(replace(clip, condition=str(condition), speaker=speaker))
    return out


Loaded = tuple[list[Clip], Counter[str]]


def load_manifest(path: str | Path, corpus: str = "manifest") -> Loaded:
    from perception.evaluation import read_manifest

    rows, skipped = read_manifest(path)
    return [Clip(r.path, r.emotion, r.transcript, r.speaker, corpus) for r in rows], skipped


# -- CREMA-D -------------------------------------------------------------------------------------------
CREMA_SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
CREMA_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}


def load_crema_d(root: str | Path) -> Loaded:
    root = Path(root)
    if (root / "manifest.csv").is_file():
        return load_manifest(root / "manifest.csv", corpus="crema-d")
    clips, skipped = [], Counter[str]()
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        parts = path.stem.split("_")
        if len(parts) < 3:
            continue
        label = CREMA_EMOTIONS.get(parts[2].upper())
        if label is None:
            skipped[parts[2]] += 1
            continue
        clips.append(Clip(path, label, CREMA_SENTENCES.get(parts[1].upper()), parts[0], "crema-d"))
    return clips, skipped


# -- RAVDESS -------------------------------------------------------------------------------------------
RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def load_ravdess(root: str | Path, include_song: bool = False) -> Loaded:
    clips, skipped = [], Counter[str]()
    for path in sorted(Path(root).rglob("*.wav")):
        m = _RAVDESS_NAME.match(path.stem)
        if m is None:
            continue
        modality, channel, emotion, _intensity, statement, _rep, actor = m.groups()
        if modality != "03" or (channel == "02" and not include_song):
            continue
        raw = RAVDESS_EMOTIONS.get(emotion, emotion)
        label = canonical_label(raw)
        if label is None:
            skipped[raw] += 1
            continue
        clips.append(Clip(path, label, RAVDESS_STATEMENTS.get(statement), f"ravdess-{actor}", "ravdess"))
    return clips, skipped


# -- IEMOCAP -------------------------------------------------------------------------------------------
_IEMOCAP_LABEL = re.compile(r"^\[[\d.]+ - [\d.]+\]\s+(\S+)\s+(\S+)\s+\[")
_IEMOCAP_TEXT = re.compile(r"^(\S+)\s+\[[\d.]+-[\d.]+\]:\s*(.*)$")


def load_iemocap(root: str | Path, merge_excited: bool = False) -> Loaded:
    clips, skipped = [], Counter[str]()
    for session in sorted(Path(root).glob("Session*")):
        texts: dict[str, str] = {}
        for path in sorted((session / "dialog" / "transcriptions").glob("*.txt")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if m := _IEMOCAP_TEXT.match(line.strip()):
                    texts[m.group(1)] = m.group(2).strip()
        for path in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                m = _IEMOCAP_LABEL.match(line.strip())
                if m is None:
                    continue
                utterance, raw = m.groups()
                label = "happy" if (raw == "exc" and merge_excited) else canonical_label(raw)
                wav = session / "sentences" / "wav" / path.stem / f"{utterance}.wav"
                if label is None:
                    skipped[raw] += 1
                    continue
                if not wav.is_file():
                    skipped["<missing audio>"] += 1
                    continue
                speaker = f"{utterance[:5]}{utterance.rsplit('_', 1)[-1][0]}"  # e.g. Ses01F
                clips.append(Clip(wav, label, texts.get(utterance), speaker, "iemocap", session.name))
    return clips, skipped


# -- MELD ----------------------------------------------------------------------------------------------
MELD_SPLITS = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def load_meld(root: str | Path, splits: tuple[str, ...] = ("train", "dev", "test")) -> Loaded:
    root = Path(root)
    audio: dict[tuple[str, str], Path] = {}
    for path in root.rglob("dia*_utt*"):
        if path.suffix.lower() in AUDIO_SUFFIXES:
            split = _meld_split_of(path)
            key = (split, path.stem)
            if key not in audio or path.suffix.lower() != ".mp4":  # prefer extracted audio over video
                audio[key] = path
    clips, skipped = [], Counter[str]()
    for split in splits:
        table = next(iter(sorted(root.rglob(MELD_SPLITS[split]))), None)
        if table is None:
            continue
        with open(table, newline="", encoding="utf-8", errors="replace") as f:
            for row in csv.DictReader(f):
                raw = (row.get("Emotion") or "").strip()
                label = canonical_label(raw)
                if label is None:
                    skipped[raw] += 1
                    continue
                stem = f"dia{row['Dialogue_ID'].strip()}_utt{row['Utterance_ID'].strip()}"
                path = audio.get((split, stem)) or audio.get(("", stem))
                if path is None:
                    skipped["<missing audio>"] += 1
                    continue
                text = (row.get("Utterance") or "").replace("\u0092", "'").strip() or None
                clips.append(
                    Clip(path, label, text, (row.get("Speaker") or "").strip() or None, "meld", split)
                )
    return clips, skipped


def _meld_split_of(path: Path) -> str:
    """Which split an audio file belongs to, from its folder (released: train_splits, dev_splits_complete,
    output_repeated_splits_test); "" when the folder does not say."""
    for parent in path.parents:
        name = parent.name.lower()
        for split in ("train", "dev", "test"):
            if split in name:
                return split
    return ""


LOADERS = {
    "manifest": load_manifest,
    "crema-d": load_crema_d,
    "ravdess": load_ravdess,
    "iemocap": load_iemocap,
    "meld": load_meld,
}


def load_corpus(kind: str, path: str | Path) -> Loaded:
    """Clips of one corpus (``kind`` in :data:`LOADERS`) at ``path`` (the manifest file or corpus root)."""
    if kind not in LOADERS:
        raise ValueError(f"unknown corpus {kind!r} (known: {', '.join(LOADERS)})")
    return LOADERS[kind](path)
