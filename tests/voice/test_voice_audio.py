"""Streaming resampling, the real Silero VAD on a real sentence, sentence splitting and Piper TTS."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from dialogue.events import Prosody
from voice.resample import StreamingResampler
from voice.sentences import SentenceSplitter
from voice.turns import SpeechStarted, TurnDetector, TurnEnded, TurnSettings
from voice.vad import CHUNK_SAMPLES, SileroVAD

# ------------------------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 44100, 48000])
def test_streaming_resampler_matches_resample_poly(rate: int) -> None:
    rng = np.random.default_rng(rate)
    x = (rng.standard_normal(rate + 777) * 0.1).astype(np.float32)
    reference = x if rate == 16000 else resample_poly(x, 16000, rate)
    r = StreamingResampler(rate)
    out, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(1, 2500))
        out.append(r.process(x[pos : pos + n]))
        pos += n
    out.append(r.flush())
    y = np.concatenate(out)
    assert len(y) == len(reference)
    np.testing.assert_allclose(y, reference, atol=1e-5)


# ------------------------------------------------------------------------------------------------- VAD


def test_silero_gives_probabilities_per_chunk(silero: SileroVAD) -> None:
    stream = silero.new_stream()
    assert stream(np.zeros(CHUNK_SAMPLES, np.float32)) < 0.2
    with pytest.raises(ValueError):
        stream(np.zeros(100, np.float32))


def test_silero_finds_start_and_end_of_a_real_sentence(silero: SileroVAD, speech_clip: np.ndarray) -> None:
    lead, tail = np.zeros(8000, np.float32), np.zeros(16000, np.float32)
    audio = np.concatenate([lead, speech_clip, tail])
    detector = TurnDetector(silero.new_stream(), TurnSettings())
    events = detector.feed(audio)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert len(started) == 1 and len(ended) == 1
    clip_end = (len(lead) + len(speech_clip)) / 16000
    assert 0.5 <= started[0].t < 0.5 + 1.0  # speech in the clip begins a little after its start
    assert ended[0].reason == "silence"
    assert clip_end - 0.5 < ended[0].t_end < clip_end + 0.8
    # Sessions keep separate state on one shared model.
    a, b = silero.new_stream(), silero.new_stream()
    chunk = speech_clip[16000 : 16000 + CHUNK_SAMPLES]
    a(chunk)
    assert a._state is not b._state


# --------------------------------------------------------------------------------------------- sentences


def split_stream(pieces: list[str]) -> list[str]:
    s = SentenceSplitter()
    out: list[str] = []
    for piece in pieces:
        out.extend(s.push(piece))
    rest = s.finish()
    return out + ([rest] if rest else [])


def test_sentences_are_released_as_soon_as_complete() -> None:
    s = SentenceSplitter()
    assert s.push("Hello there") == []
    assert s.push(". How") == ["Hello there."]
    assert s.push(" are you? ") == []  # undecided until the next word arrives
    assert s.push("Fine") == ["How are you?"]
    assert s.finish() == "Fine"
    assert s.finish() is None


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Hello Mr. Sm", "ith. Bye."], ["Hello Mr. Smith.", "Bye."]),
        (["Dr. Who and Mrs. Hudson came. Then"], ["Dr. Who and Mrs. Hudson came.", "Then"]),
        (["It is 3.5 degr", "ees today. Nice."], ["It is 3.5 degrees today.", "Nice."]),
        (["Well... maybe not. Ok."], ["Well... maybe not.", "Ok."]),
        (["Wait... What was that?"], ["Wait...", "What was that?"]),
        (["Use tools, e.g. a hammer. Done"], ["Use tools, e.g. a hammer.", "Done"]),
        (["J. K. Rowling wrote it. Yes"], ["J. K. Rowling wrote it.", "Yes"]),
        (['She said "stop." Then left.'], ['She said "stop."', "Then left."]),
        (["Really?! Yes!"], ["Really?!", "Yes!"]),
        (["First line\nSecond line"], ["First line", "Second line"]),
        (["I see…", " Go on."], ["I see…", "Go on."]),
    ],
)
def test_sentence_cases(pieces: list[str], expected: list[str]) -> None:
    assert split_stream(pieces) == expected


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (
            ["I'm sorry to hear that you", "'re feeling this way,", " and I want to help. Tell me, more."],
            ["I'm sorry to hear that you're feeling this way,", "and I want to help.", "Tell me, more."],
        ),
        (["Oh, dear. It sounds hard, doesn't it? Yes"], ["Oh, dear.", "It sounds hard, doesn't it?", "Yes"]),
        (
            ["It costs 3,000 dollars a year for the plan — more or less. Ok"],
            ["It costs 3,000 dollars a year for the plan —", "more or less.", "Ok"],
        ),
        (["A clause that is long enough,"], ["A clause that is long enough,"]),  # next word unknown yet
    ],
)
def test_the_first_piece_may_end_at_a_clause_break(pieces: list[str], expected: list[str]) -> None:
    s = SentenceSplitter(first_clause_chars=20)
    out: list[str] = []
    for piece in pieces:
        out.extend(s.push(piece))
    rest = s.finish()
    assert out + ([rest] if rest else []) == expected
    assert s.push("Again, a second reply starts here, too. ") == ["Again, a second reply starts here,"]


def test_without_first_clause_chars_only_sentences_are_spoken() -> None:
    assert split_stream(["I'm sorry to hear that you're feeling this way, and I want to help. Ok"]) == [
        "I'm sorry to hear that you're feeling this way, and I want to help.",
        "Ok",
    ]


def test_long_sentences_are_cut_at_a_comma() -> None:
    text = "word " * 30 + ", and then " + "more " * 40
    out = split_stream([text])
    assert len(out) >= 2 and all(len(s) <= 250 for s in out)
    assert " ".join(out).split() == text.split()


# --------------------------------------------------------------------------------------------------- TTS


@pytest.fixture(scope="module")
def piper():
    from voice.tts import PiperTTS

    return PiperTTS()


@pytest.mark.slow
def test_piper_speaks_non_silent_pcm(piper) -> None:
    pcm = b"".join(piper.synthesize("Hello. I am glad you called."))
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    assert piper.sample_rate == 22050
    assert 0.8 < len(audio) / piper.sample_rate < 6
    assert np.sqrt(np.mean(audio**2)) > 0.02


@pytest.mark.slow
def test_prosody_changes_duration(piper) -> None:
    text = "Take a slow breath with me."
    slow = b"".join(piper.synthesize(text, Prosody(length_scale=1.6, noise_scale=0.0, noise_w=0.0)))
    fast = b"".join(piper.synthesize(text, Prosody(length_scale=0.7, noise_scale=0.0, noise_w=0.0)))
    assert len(slow) > 1.5 * len(fast)
    quiet = b"".join(piper.synthesize(text, Prosody(volume=0.3, noise_scale=0.0, noise_w=0.0)))
    assert np.abs(np.frombuffer(quiet, "<i2")).max() <= 0.31 * 32767


def test_build_tts_uses_configured_voice(tmp_path) -> None:
    from agent.config import VoiceSettings
    from voice.tts import build_tts

    with pytest.raises(FileNotFoundError):
        build_tts(VoiceSettings(tts_voice=str(tmp_path / "missing.onnx")))
