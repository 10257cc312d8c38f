"""What the words say: emotion from a turn's text, a small head over all-MiniLM-L6-v2 sentence embeddings.

Trained on EmpatheticDialogues (:mod:`perception.text_emotion_training`, ``emo-agent train-text-emotion``):
the speakers' situations and turns, their 32 emotions mapped onto the six labels and valence/arousal by
:mod:`perception.ed_emotions`. Two multinomial logistic regressions read the 384-d embedding: one gives
the six label probabilities (balanced class weights), the other the 32 ED emotions' probabilities, whose
mapped valence/arousal, weighted by them, is the turn's valence/arousal (on held-out openings this gets the
sign right more often than regressing valence directly: 0.85 against 0.83). The shipped weights
(``perception/assets/text_emotion.npz``, about 60 kB) carry the dataset's attribution (``ATTRIBUTION.md``).

The words that carried the judgement are found by occlusion: each word is left out in turn (one batch of
embeddings) and the words whose absence lowers the label's probability most are quoted, verbatim, as
lexical evidence (verified like every quote, :func:`perception.grounding.verify_item`).

    model = TextEmotionModel.load()
    reading = model.read("I had a really rough day at work and I feel exhausted.")
    reading.label, reading.valence, reading.words  # e.g. 'sad', -0.5, ['rough', 'exhausted']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.base import PerceptionError
from perception.sentence_embedding import SentenceEmbedder
from perception.types import LABELS

SHIPPED = Path(__file__).resolve().parent / "assets" / "text_emotion.npz"
_WORD = re.compile(r"[A-Za-z][A-Za-z']+")
MAX_OCCLUDED_WORDS = 24
# A word is quoted when leaving it out lowers the label's probability by at least this much.
MIN_WORD_EFFECT = 0.04
MAX_QUOTED_WORDS = 3


@dataclass(frozen=True)
class TextReading:
    """The text model's reading of one turn."""

    scores: dict[str, float]  # over perception.types.LABELS, summing to 1
    valence: float
    arousal: float
    words: list[str]  # verbatim words of the text that carried the label (empty for neutral)

    @property
    def label(self) -> str:
        return max(self.scores, key=lambda k: self.scores[k])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class TextEmotionModel:
    """The two heads and the embedder they read. Thread-safe (the embedder holds a lock)."""

    def __init__(
        self,
        labels: list[str],
        label_coef: np.ndarray,
        label_bias: np.ndarray,
        emotion_coef: np.ndarray,
        emotion_bias: np.ndarray,
        emotion_va: np.ndarray,
        embedder: SentenceEmbedder | None = None,
    ) -> None:
        """``label_*``: the six-label head ``(6, 384)``, ``(6,)``; ``emotion_*``: the head over the fine
        emotions ``(k, 384)``, ``(k,)`` and each one's valence/arousal ``(k, 2)``."""
        if sorted(labels) != sorted(LABELS):
            raise PerceptionError(f"text-emotion labels {labels} are not the six labels {list(LABELS)}")
        self.labels = list(labels)
        self.label_coef, self.label_bias = label_coef.astype(np.float32), label_bias.astype(np.float32)
        self.emotion_coef = emotion_coef.astype(np.float32)
        self.emotion_bias = emotion_bias.astype(np.float32)
        self.emotion_va = emotion_va.astype(np.float32)
        self.embedder = embedder or SentenceEmbedder()

    @classmethod
    def load(
        cls, path: str | Path | None = None, embedder: SentenceEmbedder | None = None
    ) -> TextEmotionModel:
        """The weights at ``path`` (default: the shipped ones); :class:`PerceptionError` when unreadable."""
        path = Path(path) if path else SHIPPED
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    [str(x) for x in data["labels"]],
                    data["label_coef"],
                    data["label_bias"],
                    data["emotion_coef"],
                    data["emotion_bias"],
                    data["emotion_va"],
                    embedder,
                )
        except (OSError, KeyError, ValueError) as exc:
            raise PerceptionError(f"cannot load the text-emotion model from {path}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path,
            labels=np.array(self.labels),
            label_coef=self.label_coef,
            label_bias=self.label_bias,
            emotion_coef=self.emotion_coef,
            emotion_bias=self.emotion_bias,
            emotion_va=self.emotion_va,
        )

    # ------------------------------------------------------------------------------------------ reading

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Label probabilities ``(n, 6)`` (columns in :attr:`labels` order) of embeddings ``(n, 384)``."""
        return _softmax(vectors @ self.label_coef.T + self.label_bias)

    def valence_arousal(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, 2)`` valence and arousal in [-1, 1] of embeddings ``(n, 384)``."""
        fine = _softmax(vectors @ self.emotion_coef.T + self.emotion_bias)
        return np.clip(fine @ self.emotion_va, -1.0, 1.0)

    def read(self, text: str) -> TextReading:
        """Scores, valence/arousal and the words that carried them, for one turn's text."""
        words = [m.group(0) for m in _WORD.finditer(text)][:MAX_OCCLUDED_WORDS]
        texts = [text] + [_without(text, w) for w in words]
        vectors = self.embedder(texts)
        probs = self.probabilities(vectors)
        va = self.valence_arousal(vectors[:1])[0]
        top = int(probs[0].argmax())
        scores = {label: float(p) for label, p in zip(self.labels, probs[0], strict=True)}
        carried: list[str] = []
        if self.labels[top] != "neutral" and words:
            effect = probs[0, top] - probs[1:, top]
            order = np.argsort(-effect)
            for i in order[:MAX_QUOTED_WORDS]:
                if effect[i] >= MIN_WORD_EFFECT and words[i] not in carried:
                    carried.append(words[i])
        return TextReading(_rounded(scores), float(va[0]), float(va[1]), carried)


def _without(text: str, word: str) -> str:
    return re.sub(rf"\b{re.escape(word)}\b", "", text, count=1)


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    out = {k: round(v, 4) for k, v in scores.items()}
    top = max(out, key=lambda k: out[k])
    out[top] = round(out[top] + 1.0 - sum(out.values()), 4)
    return out
