"""The reply model: EmpatheticDialogues examples, the conditioning line, the copy guard, the CTranslate2
engine (slow: the bundled SmolLM2 converted once) and the shipped adapter."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from dialogue.ed_emotions import ED_EMOTIONS, map_emotion
from dialogue.reply_data import examples, is_validation, read_conversations
from dialogue.reply_format import conditioning_line, reply_system_prompt
from dialogue.reply_guard import blocked_sequences, is_copy, overlap
from dialogue.state import PerceptionSummary
from perception.types import LABELS

ED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "empathetic-dialogues"
UPBEAT = ("great", "wonderful", "glad", "fantastic", "awesome", "amazing")


def test_every_ed_emotion_maps_onto_a_label_and_the_circumplex() -> None:
    assert len(ED_EMOTIONS) == 32
    for name, (label, valence, arousal) in ED_EMOTIONS.items():
        assert label in LABELS, name
        assert -1 <= valence <= 1 and -1 <= arousal <= 1
    assert map_emotion("Devastated") == ("sad", -0.8, 0.2)
    assert map_emotion("bored") is None
    negative = {"sad", "angry", "fear", "disgust"}
    assert all(v < 0 for label, v, _ in ED_EMOTIONS.values() if label in negative)
    assert all(v > 0 for label, v, _ in ED_EMOTIONS.values() if label == "happy")


def test_the_conditioning_line_carries_policy_and_perception() -> None:
    sad = PerceptionSummary(label="sad", scores={"sad": 0.9}, valence=-0.64, arousal=-0.04)
    assert reply_system_prompt("empathize", sad) == (
        "policy: empathize; feeling: sad; valence: -0.6; arousal: +0.0"
    )
    assert reply_system_prompt("neutral", None) == "policy: neutral; feeling: unknown"
    custom = reply_system_prompt("calm_breathing", sad, "Guide one slow breath.")
    assert custom.endswith("\nGuide one slow breath.")  # policies it was not trained on bring their words
    assert conditioning_line("encourage", "happy", 0.7, 0.4).startswith("policy: encourage; feeling: happy")


def test_copy_measures() -> None:
    user = "I would like a new alarm clock."
    assert is_copy("A new alarm clock.", [user])
    assert is_copy("I would like a new alarm clock.", [user])
    assert not is_copy("That sounds useful. What happened to the old one?", [user])
    assert overlap("", user) == 0.0
    blocked = blocked_sequences([["a", "b", "c", "d", "e"]], 4)
    assert blocked == [["a", "b", "c", "d"], ["b", "c", "d", "e"]]


def _tiny_ed(tmp_path: Path) -> Path:
    rows = []
    for c in range(40):
        emotion = ("sad", "joyful", "furious", "afraid")[c % 4]
        for t, (who, text) in enumerate(
            [
                ("speaker", f"Something happened to me today, number {c}."),
                ("listener", "Oh no, how are you holding up?"),
                ("speaker", "Not great, honestly."),
                ("listener", "Not great, honestly."),  # a copy: left out of training
            ]
        ):
            rows.append(
                {
                    "conv_id": f"hit:{c}_conv:{c}",
                    "emotion": emotion,
                    "situation": "x",
                    "turn": t,
                    "speaker": who,
                    "text": text,
                }
            )
    path = tmp_path / "conversations.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


def test_examples_are_split_by_conversation_and_conditioned(tmp_path: Path) -> None:
    conversations = read_conversations(_tiny_ed(tmp_path))
    train = list(examples(conversations, "train"))
    validation = list(examples(conversations, "validation"))
    assert {e.conv_id for e in train}.isdisjoint({e.conv_id for e in validation})
    assert all(is_validation(e.conv_id) for e in validation)
    assert all(e.target == "Oh no, how are you holding up?" for e in train + validation)  # copies left out
    first = next(e for e in train if e.emotion == "sad" and "unknown" not in e.system)
    assert first.system.startswith("policy: empathize; feeling: sad; valence: -")
    assert first.messages[-1][0] == "user"
    furious = next(e for e in train if e.emotion == "furious" and "unknown" not in e.system)
    assert furious.policy == "de_escalate"


@pytest.fixture(scope="module")
def bundled_on_ct2():
    from dialogue.reply_engine import ReplyChatModel

    model = ReplyChatModel(adapter=None, max_new_tokens=40, temperature=0.0)
    model.load()
    return model


@pytest.mark.slow
def test_the_engine_streams_pieces_that_add_up_to_the_text(bundled_on_ct2) -> None:
    messages = [SystemMessage("You are a kind assistant."), HumanMessage("Say something about the sea.")]
    pieces = [chunk.content for chunk in bundled_on_ct2.stream(messages)]
    assert len(pieces) > 3
    assert "".join(pieces) == bundled_on_ct2.invoke(messages).content
    assert not bundled_on_ct2.conditioned  # the bundled model reads prose prompts


@pytest.mark.slow
def test_the_guard_blocks_a_copy_of_the_user(bundled_on_ct2) -> None:
    user = "Please repeat after me exactly: I would like a new alarm clock for my bedroom."
    messages = [SystemMessage("Repeat what the user says, word for word."), HumanMessage(user)]
    unguarded = bundled_on_ct2.model_copy(update={"guard": False}).invoke(messages).content
    guarded = bundled_on_ct2.invoke(messages).content
    assert "new alarm clock for my bedroom" in unguarded.lower()  # the model would copy
    assert "new alarm clock for my bedroom" not in guarded.lower()
    loaded = bundled_on_ct2.load()
    out = loaded.tokenizer.tokenize(guarded)
    blocked = {tuple(s) for s in bundled_on_ct2.guard_sequences(loaded, messages)}
    assert not any(tuple(out[i : i + 4]) in blocked for i in range(len(out) - 3))


@pytest.mark.slow
def test_the_guard_covers_earlier_replies_and_the_system_line(bundled_on_ct2) -> None:
    loaded = bundled_on_ct2.load()
    messages = [
        SystemMessage("policy: empathize; feeling: sad"),
        HumanMessage("hello there"),
        AIMessage("That sounds really hard to carry alone."),
        HumanMessage("it is"),
    ]
    blocked = {tuple(s) for s in bundled_on_ct2.guard_sequences(loaded, messages)}
    earlier = loaded.tokenizer.tokenize(" That sounds really hard to carry alone.")
    assert tuple(earlier[:3]) in blocked  # an earlier reply's 3-grams (the user's: 4-grams)
    system = loaded.tokenizer.tokenize(" policy: empathize; feeling: sad")
    assert tuple(system[:4]) in blocked


@pytest.mark.slow
def test_the_shipped_reply_model_answers_a_sad_turn_gently() -> None:
    from dialogue.reply_engine import SHIPPED_ADAPTER, ReplyChatModel

    for name in ("adapter_config.json", "adapter_model.safetensors", "training.json"):
        assert (SHIPPED_ADAPTER / name).is_file(), name
    attribution = (SHIPPED_ADAPTER / "ATTRIBUTION.md").read_text()
    assert "EmpatheticDialogues" in attribution and "CC BY 4.0" in attribution and "CC BY-NC" in attribution
    assert (SHIPPED_ADAPTER / "adapter_model.safetensors").stat().st_size < 30e6
    model = ReplyChatModel(max_new_tokens=40)
    assert model.conditioned
    sad = PerceptionSummary(label="sad", scores={"sad": 0.9}, valence=-0.7, arousal=-0.3)
    for i, text in enumerate(
        ["My dog died this morning.", "I failed my driving test again.", "I feel so alone since I moved."]
    ):
        messages = [SystemMessage(reply_system_prompt("empathize", sad)), HumanMessage(text)]
        reply = model.model_copy(update={"seed": i}).invoke(messages).content
        assert reply.strip(), text
        assert not any(word in reply.lower() for word in UPBEAT), reply
        assert not is_copy(reply, [text]), reply
        assert "policy" not in reply.lower() and "valence" not in reply.lower(), reply


@pytest.mark.slow
def test_gentle_policies_block_cheerful_words(bundled_on_ct2) -> None:
    loaded = bundled_on_ct2.load()
    great = tuple(loaded.tokenizer.tokenize(" great"))

    def blocked(line: str) -> set:
        messages = [SystemMessage(line), HumanMessage("my cat is ill")]
        return {tuple(s) for s in bundled_on_ct2.guard_sequences(loaded, messages)}

    assert great in blocked("policy: empathize; feeling: happy; valence: +0.6; arousal: +0.2")
    assert great in blocked("policy: de_escalate; feeling: calm")
    assert great in blocked("policy: encourage; feeling: sad")  # the words can be upset under any policy
    assert great in blocked("policy: neutral; feeling: calm; valence: +0.1; arousal: +0.0")
    cheerful = blocked("policy: encourage; feeling: happy; valence: +0.6; arousal: +0.3")
    assert great not in cheerful
    assert tuple(loaded.tokenizer.tokenize(" happy for you")) in blocked("policy: empathize; feeling: sad")
    assert tuple(loaded.tokenizer.tokenize(" happy for you")) not in cheerful


@pytest.mark.slow
def test_an_earlier_replys_sentences_are_blocked_as_a_reply_would_start_them(bundled_on_ct2) -> None:
    loaded = bundled_on_ct2.load()
    messages = [
        SystemMessage("policy: neutral; feeling: calm"),
        HumanMessage("I start a new job on Monday."),
        AIMessage("That sounds exciting. I hope you like the people there."),
        HumanMessage("I hope so too."),
    ]
    blocked = {tuple(s) for s in bundled_on_ct2.guard_sequences(loaded, messages)}
    opening = loaded.tokenizer.tokenize("I hope you")
    assert tuple(opening[:3]) in blocked  # mid-reply in the earlier one, a reply's first words now
    assert tuple(loaded.tokenizer.tokenize(" I hope you")[:3]) in blocked


@pytest.mark.slow
def test_the_guard_covers_every_user_turn_in_view(bundled_on_ct2) -> None:
    loaded = bundled_on_ct2.load()
    messages = [
        SystemMessage("policy: neutral; feeling: calm"),
        HumanMessage("(Earlier: the user said don't forget a jacket.)\n\nWe stop in a few minutes."),
        AIMessage("Where are you going?"),
        HumanMessage("To the lake."),
    ]
    blocked = {tuple(s) for s in bundled_on_ct2.guard_sequences(loaded, messages)}
    older = loaded.tokenizer.tokenize(" don't forget a jacket.")
    assert tuple(older[:4]) in blocked


@pytest.mark.slow
def test_training_goes_on_from_an_adapter_over_the_examples_after_it(tmp_path: Path) -> None:
    import json
    from dataclasses import replace

    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from dialogue.reply_training import ReplyTrainConfig, train
    from perception.bundled_lm import convert_bundled_model
    from perception.config import default_cache_dir

    tokenizer = AutoTokenizer.from_pretrained(convert_bundled_model(default_cache_dir()))
    tiny = tmp_path / "tiny"  # the bundled tokenizer on a two-layer model: the real training path, quickly
    tokenizer.save_pretrained(tiny)
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=1, **shape)).save_pretrained(
        tiny
    )
    data = _tiny_ed(tmp_path)
    config = ReplyTrainConfig(
        steps=2,
        batch_size=2,
        lora_r=2,
        lora_alpha=4,
        first_lora_layer=0,
        save_every=1,
        eval_examples=2,
        threads=1,
    )
    first = train(data, tmp_path / "a", config, tiny, progress=False)
    weights = load_file(str(first / "adapter_model.safetensors"))

    same = train(data, tmp_path / "b", replace(config, from_adapter=str(first)), tiny, progress=False)
    for name, tensor in load_file(str(same / "adapter_model.safetensors")).items():  # nothing left to do
        assert tensor.equal(weights[name])
    longer = train(
        data, tmp_path / "c", replace(config, steps=3, from_adapter=str(first)), tiny, progress=False
    )
    assert json.loads((tmp_path / "c" / "checkpoint" / "state.json").read_text())["step"] == 3
    moved = load_file(str(longer / "adapter_model.safetensors"))
    assert any(not moved[name].equal(weights[name]) for name in weights)  # one more step, from there
