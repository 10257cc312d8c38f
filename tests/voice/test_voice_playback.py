"""Playback pacing and heard-text maths (voice.playback), without sockets or sleeping: time is passed in."""

from __future__ import annotations

import pytest

from voice.playback import Playback, SpokenSentence, heard_text, pcm_frames

RATE = 16_000
FRAME_S = 0.1
FRAME_BYTES = int(RATE * FRAME_S) * 2


def sentences(*spans: tuple[str, float]) -> list[SpokenSentence]:
    """Sentences back to back, each (text, duration in seconds)."""
    out, t = [], 0.0
    for text, duration in spans:
        out.append(SpokenSentence(text, t, t + duration))
        t += duration
    return out


TWO = sentences(("One two three four.", 2.0), ("Five six.", 1.0))


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (0.0, ""),
        (0.49, ""),  # under a quarter of four words: not one word heard yet
        (0.5, "One"),
        (1.0, "One two"),
        (1.99, "One two three"),
        (2.0 - 1e-7, "One two three four."),  # the sentence's end, up to float rounding of frame sums
        (2.0, "One two three four."),
        (2.5, "One two three four. Five"),
        (3.0, "One two three four. Five six."),
        (99.0, "One two three four. Five six."),
    ],
)
def test_heard_text_is_whole_sentences_then_the_played_share_of_words(position: float, expected: str) -> None:
    assert heard_text(TWO, position) == expected


def test_heard_text_stops_at_the_first_sentence_not_reached() -> None:
    # A gap in the timeline (a sentence that starts later) is not skipped over.
    spoken = [SpokenSentence("First.", 0.0, 1.0), SpokenSentence("Second one.", 2.0, 3.0)]
    assert heard_text(spoken, 1.5) == "First."
    assert heard_text([], 5.0) == ""


def test_heard_text_of_a_zero_length_sentence_counts_it_once_reached() -> None:
    spoken = [SpokenSentence("Hm.", 0.0, 0.0), SpokenSentence("Yes indeed.", 0.0, 1.0)]
    assert heard_text(spoken, 0.0) == "Hm."
    assert heard_text(spoken, 0.5) == "Hm. Yes"


@pytest.mark.parametrize("rate", [16_000, 22_050, 44_100, 8_001])
def test_pcm_frames_are_at_most_100_ms_whole_samples_and_add_up(rate: int) -> None:
    pcm = bytes(range(256)) * (rate // 50 + 7)  # a few hundred ms, not a whole number of frames
    pcm = pcm[: len(pcm) // 2 * 2]
    frames = list(pcm_frames(pcm, rate))
    assert b"".join(frames) == pcm
    assert all(len(f) % 2 == 0 for f in frames)
    assert max(len(f) for f in frames) == rate * 100 // 1000 * 2
    assert all(len(f) == len(frames[0]) for f in frames[:-1]) and len(frames[-1]) <= len(frames[0])
    assert list(pcm_frames(b"", rate)) == []


def send_frames(playback: Playback, now: float, n: int, lead_s: float) -> float:
    """Send ``n`` 100 ms frames starting at ``now``, waiting as told; returns the time after the last."""
    for _ in range(n):
        now += playback.wait_before_frame(now, lead_s)
        playback.frame_sent(FRAME_BYTES, RATE)
    return now


def test_pacing_lets_the_first_lead_go_at_once_then_keeps_at_most_lead_ahead() -> None:
    playback = Playback()
    assert playback.wait_before_frame(100.0, 0.5) == 0.0
    assert playback.origin == 100.0  # the first frame plays on arrival
    playback.frame_sent(FRAME_BYTES, RATE)
    for _ in range(4):  # up to 0.5 s ahead: no waiting
        assert playback.wait_before_frame(100.0, 0.5) == 0.0
        playback.frame_sent(FRAME_BYTES, RATE)
    assert playback.sent_s == pytest.approx(0.5)
    assert playback.wait_before_frame(100.0, 0.5) == pytest.approx(0.0)
    playback.frame_sent(FRAME_BYTES, RATE)
    assert playback.wait_before_frame(100.0, 0.5) == pytest.approx(0.1)  # 0.6 s ahead


def test_pacing_over_a_long_reply_never_runs_more_than_the_lead_ahead() -> None:
    playback = Playback()
    now = 0.0
    for _ in range(100):
        now += playback.wait_before_frame(now, 0.5)
        assert playback.sent_s - playback.position(now) <= 0.5 + 1e-9
        playback.frame_sent(FRAME_BYTES, RATE)
    # The last of 10 s went out at 9.4 s, half a second ahead of the client, as a loudspeaker would play it.
    assert playback.sent_s == pytest.approx(10.0)
    assert now == pytest.approx(9.4)
    assert playback.remaining(now) == pytest.approx(0.6)
    assert playback.remaining(now + 2) == 0.0


def test_a_gap_while_tts_catches_up_is_not_counted_as_played() -> None:
    playback = Playback()
    playback.add_sentence("First sentence here now.", 1.0)
    end = send_frames(playback, 0.0, 10, lead_s=5.0)  # all of it at once
    assert end == 0.0 and playback.position(0.5) == pytest.approx(0.5)
    # The client has played everything by t=1; the next sentence's audio only arrives at t=4.
    assert playback.heard_text(3.9) == "First sentence here now."
    playback.add_sentence("Second one.", 1.0)
    assert playback.wait_before_frame(4.0, 5.0) == 0.0
    assert playback.origin == pytest.approx(3.0)  # re-anchored: position 1.0 plays at t=4
    send_frames(playback, 4.0, 10, lead_s=5.0)
    assert playback.position(4.0) == pytest.approx(1.0)  # the three silent seconds count for nothing
    assert playback.heard_text(4.5) == "First sentence here now. Second"
    assert playback.heard_text(5.0) == "First sentence here now. Second one."


def test_position_is_zero_before_any_frame_and_never_past_what_was_sent() -> None:
    playback = Playback()
    assert playback.position(123.0) == 0.0 and playback.heard_text(123.0) == ""
    playback.add_sentence("Hello there.", 0.2)
    send_frames(playback, 10.0, 2, lead_s=0.5)
    assert playback.position(9.0) == 0.0  # before the origin
    assert playback.position(10.1) == pytest.approx(0.1)
    assert playback.position(60.0) == pytest.approx(0.2)
    assert playback.heard_text(60.0) == "Hello there."


def test_sentences_are_placed_after_everything_sent() -> None:
    playback = Playback()
    playback.add_sentence("A.", 0.3)
    send_frames(playback, 0.0, 3, lead_s=1.0)
    playback.add_sentence("B c.", 0.2)
    assert playback.sentences[1] == SpokenSentence("B c.", pytest.approx(0.3), pytest.approx(0.5))
