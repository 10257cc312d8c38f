"""What the words say: emotion from a turn's text, a small head over all-MiniLM-L6-v2 sentence embeddings
(the encoder tuned for feeling by a LoRA adapter, :mod:`perception.text_encoder_tuning`, named in the
weights file and loaded from beside it).

Trained on EmpatheticDialogues (:mod:`perception.text_emotion_training`, ``emo-agent train-text-emotion``):
the speakers' situations and turns, their 32 emotions mapped onto the six labels and valence/arousal by
:mod:`perception.ed_emotions`. Two multinomial logistic regressions read the 384-d embedding: one gives
the six label probabilities (balanced class weights), the other the 32 ED emotions' probabilities, whose
mapped valence/arousal, weighted by them, is the turn's valence/arousal (on held-out openings this gets the
sign right more often than regressing valence directly, or than a logistic regression on the sign). The
shipped weights (``perception/assets/text_emotion.npz``, about 60 kB, and ``text_encoder/``, 1.4 MB) carry
the dataset's attribution (``ATTRIBUTION.md``).

A later turn is ambiguous alone ("Yeah, it was." could follow a loss, a win or a scare), so a turn can be
read after the conversation's earlier user turns (``read(text, context)``; the session keeps them in its
speaker baseline, :meth:`perception.base.SpeakerBaseline.recent_texts`): each head's log-probabilities of
the turn, plus ``context_weight`` times the decayed mean of the earlier turns' (each read alone), the
weight and decay chosen on validation.

The words that carried the judgement are found by occlusion: each word is left out in turn (one batch of
embeddings) and the words whose absence lowers the label's probability most are quoted, verbatim, as
lexical evidence (verified like every quote, :func:`perception.grounding.verify_item`).

    model = TextEmotionModel.load()
    reading = model.read("I had a really rough day at work and I feel exhausted.")
    reading.label, reading.valence, reading.words  # e.g. 'sad', -0.5, ['rough', 'exhausted']
    model.read("Yeah, it was.", ["My grandmother passed away last week."]).label  # 'sad'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.base import CONTEXT_TURNS, PerceptionError
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


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


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
        context_weight: float = 0.0,
        context_decay: float = 1.0,
    ) -> None:
        """``label_*``: the six-label head ``(6, 384)``, ``(6,)``; ``emotion_*``: the head over the fine
        emotions ``(k, 384)``, ``(k,)`` and each one's valence/arousal ``(k, 2)``. A turn read after
        earlier ones: both heads' log-probabilities of the turn plus ``context_weight`` times the decayed
        mean of the earlier turns' (read alone; the latest weighs 1, the one before ``context_decay``, ...);
        ``context_weight`` 0: every turn is read alone."""
        if sorted(labels) != sorted(LABELS):
            raise PerceptionError(f"text-emotion labels {labels} are not the six labels {list(LABELS)}")
        self.labels = list(labels)
        self.label_coef, self.label_bias = label_coef.astype(np.float32), label_bias.astype(np.float32)
        self.emotion_coef = emotion_coef.astype(np.float32)
        self.emotion_bias = emotion_bias.astype(np.float32)
        self.emotion_va = emotion_va.astype(np.float32)
        self.context_weight, self.context_decay = float(context_weight), float(context_decay)
        self.embedder = embedder or SentenceEmbedder()

    @classmethod
    def load(
        cls, path: str | Path | None = None, embedder: SentenceEmbedder | None = None
    ) -> TextEmotionModel:
        """The weights at ``path`` (default: the shipped ones); :class:`PerceptionError` when unreadable."""
        path = Path(path) if path else SHIPPED
        try:
            with np.load(path, allow_pickle=False) as data:
                has_context = "context_weight" in data.files
                encoder = str(data["encoder"]) if "encoder" in data.files else ""
                if embedder is None and encoder:  # a tuned encoder's adapter, beside the heads
                    embedder = SentenceEmbedder(adapter=path.parent / encoder)
                return cls(
                    [str(x) for x in data["labels"]],
                    data["label_coef"],
                    data["label_bias"],
                    data["emotion_coef"],
                    data["emotion_bias"],
                    data["emotion_va"],
                    embedder,
                    float(data["context_weight"]) if has_context else 0.0,
                    float(data["context_decay"]) if has_context else 1.0,
                )
        except (OSError, KeyError, ValueError) as exc:
            raise PerceptionError(f"cannot load the text-emotion model from {path}: {exc}") from exc

    def save(self, path: str | Path, encoder: str = "") -> None:
        """Write the heads; ``encoder``: the folder of the tuned encoder's adapter, relative to ``path``'s
        (empty: the plain all-MiniLM-L6-v2)."""
        np.savez_compressed(
            path,
            labels=np.array(self.labels),
            label_coef=self.label_coef,
            label_bias=self.label_bias,
            emotion_coef=self.emotion_coef,
            emotion_bias=self.emotion_bias,
            emotion_va=self.emotion_va,
            context_weight=np.float64(self.context_weight),
            context_decay=np.float64(self.context_decay),
            encoder=np.array(encoder),
        )

    # ------------------------------------------------------------------------------------------ reading

    def probabilities(self, vectors: np.ndarray, earlier: np.ndarray | None = None) -> np.ndarray:
        """Label probabilities ``(n, 6)`` (columns in :attr:`labels` order) of embeddings ``(n, 384)``,
        each read after the earlier turns' embeddings ``earlier`` ``(m, 384)``, oldest first."""
        return self._with_context(_log_softmax(vectors @ self.label_coef.T + self.label_bias), earlier, True)

    def valence_arousal(self, vectors: np.ndarray, earlier: np.ndarray | None = None) -> np.ndarray:
        """``(n, 2)`` valence and arousal in [-1, 1] of embeddings ``(n, 384)`` (after ``earlier``)."""
        fine = self._with_context(_log_softmax(vectors @ self.emotion_coef.T + self.emotion_bias), earlier)
        return np.clip(fine @ self.emotion_va, -1.0, 1.0)

    def _with_context(self, logp: np.ndarray, earlier: np.ndarray | None, labels: bool = False) -> np.ndarray:
        if earlier is not None and len(earlier) and self.context_weight > 0:
            head = (self.label_coef, self.label_bias) if labels else (self.emotion_coef, self.emotion_bias)
            before = _log_softmax(earlier @ head[0].T + head[1])
            weights = self.context_decay ** np.arange(len(earlier) - 1, -1, -1, dtype=np.float32)
            logp = logp + self.context_weight * (weights @ before) / weights.sum()
        return _softmax(logp)

    def read(self, text: str, context: Sequence[str] = ()) -> TextReading:
        """Scores, valence/arousal and the words that carried them, for one turn's text, read after the
        conversation's earlier user turns ``context`` (oldest first; the last :data:`CONTEXT_TURNS`
        count). The quoted words are always the turn's own."""
        words = [m.group(0) for m in _WORD.finditer(text)][:MAX_OCCLUDED_WORDS]
        texts = [text] + [_without(text, w) for w in words]
        earlier = [t for t in context if t.strip()][-CONTEXT_TURNS:] if self.context_weight > 0 else []
        vectors = self.embedder(texts + earlier)
        before, vectors = vectors[len(texts) :], vectors[: len(texts)]
        probs = self.probabilities(vectors, before)
        va = self.valence_arousal(vectors[:1], before)[0]
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
