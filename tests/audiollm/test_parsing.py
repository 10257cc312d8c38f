"""The reasoning format round-trips and the parser survives malformed generations."""

from __future__ import annotations

from perception.audiollm.parsing import format_reasoning_target, parse_generation
from perception.finetune.supervision import TeacherInput, TemplateTeacher, verify_explanation
from perception.types import Evidence


def test_round_trip():
    evidence = [
        Evidence(kind="acoustic", cue="pitch_mean", value=1.8, claim="raised pitch"),
        Evidence(kind="lexical", quote="hate", claim="word usually signalling anger"),
    ]
    text = format_reasoning_target("angry", evidence, "The speaker sounds angry.")
    parsed = parse_generation(text)
    assert parsed.ok and parsed.label == "angry" and parsed.evidence == evidence
    assert parsed.reasoning == "The speaker sounds angry."


def test_bare_label_and_aliases():
    assert parse_generation("Angry.").label == "angry"
    assert parse_generation("label: Anger").label == "angry"
    assert parse_generation("I think the speaker shows sadness here").label == "sad"


def test_missing_label():
    parsed = parse_generation("reasoning: the voice is loud.")
    assert parsed.label is None and "no label" in parsed.problems and not parsed.ok


def test_unknown_label():
    parsed = parse_generation("label: surprised\nreasoning: Something.")
    assert parsed.label is None and any("unknown label" in p for p in parsed.problems)


def test_extra_text_and_repeated_lines_are_ignored():
    text = "Sure! Here it is:\nlabel: happy\nlabel: sad\ncue: pitch_mean +1.20 raised pitch\n"
    text += "reasoning: Bright voice.\n"
    parsed = parse_generation(text)
    assert parsed.label == "happy" and parsed.ok and len(parsed.evidence) == 1


def test_truncated_reasoning_and_broken_evidence():
    parsed = parse_generation(
        "label: fear\ncue: pitch_mean raised\nreasoning: The speaker sounds fearful, with"
    )
    assert parsed.label == "fear"
    assert parsed.truncated and "reasoning cut off" in parsed.problems
    assert any("unparseable evidence" in p for p in parsed.problems) and parsed.evidence == []
    assert parse_generation("").label is None  # empty generation
    assert parse_generation("label:").label is None


def test_prose_cut_inside_a_number_or_a_parenthesis_is_truncated():
    for cut in (
        "The speaker sounds disgusted, with less shimmer (shimmer z=-1.",
        "The speaker sounds sad, with lowered pitch (pitch_mean z=-4.5, and.",
    ):
        parsed = parse_generation(f"label: sad\nreasoning: {cut}")
        assert parsed.truncated and not parsed.ok, cut
    whole = parse_generation("label: sad\nreasoning: The speaker sounds sad (pitch_mean z=-1.2).")
    assert whole.ok and not whole.truncated
    assert parse_generation("label: sad\nreasoning: Slower by 1.5 words per second.").ok


def test_verifier_keeps_only_true_claims():
    item = TeacherInput("I hate this.", "angry", {"pitch_mean": 1.8, "loudness_mean": 0.2})
    good = TemplateTeacher().explain(item)
    assert verify_explanation(good, item)
    assert not verify_explanation(good.replace("+1.80", "+2.50"), item)  # value does not match
    assert not verify_explanation(good.replace('"hate"', '"love"'), item)  # quote not in transcript
    assert not verify_explanation(good.replace("label: angry", "label: sad"), item)  # not the gold label
    lying = "label: angry\ncue: loudness_mean +0.20 louder voice\nreasoning: Loud."
    assert not verify_explanation(lying, item)  # z=0.2 is not louder
