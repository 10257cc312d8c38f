"""The alternating schedule trains exactly the intended parameters in each phase."""

from __future__ import annotations

import numpy as np
import torch

from perception.finetune.data import BatchSampler, TrainItem
from perception.finetune.schedule import (
    GROUPS,
    alternating_schedule,
    apply_phase,
    build_schedule,
    joint_schedule,
)
from tests.audiollm.conftest import fake_features

PREFIXES = {
    "semantic": ("semantic_projector.",),
    "paralinguistic": ("paralinguistic_projector.", "paralinguistic_tower."),
    "lora": ("language_model.",),  # only lora_ tensors under it may train
    "aux_head": ("aux_head.",),
}


def _group_of(name: str) -> str | None:
    if name.startswith("language_model."):
        return "lora" if "lora_" in name else None
    return next((g for g, prefixes in PREFIXES.items() if name.startswith(prefixes)), None)


def _pools() -> dict[str, list[TrainItem]]:
    rng = np.random.default_rng(1)
    items = [fake_features(s, rng) for s in (0.8, 1.2)]
    return {
        "asr": [TrainItem("asr", s, p, "kids are talking by the door", "angry") for s, p in items],
        "emotion": [TrainItem("emotion", s, p, "angry", "angry") for s, p in items],
        "emotion_reasoning": [
            TrainItem(
                "emotion_reasoning", s, p, "label: angry\nreasoning: the speaker sounds angry.", "angry"
            )
            for s, p in items
        ],
    }


def test_each_phase_trains_exactly_its_groups(tiny):
    _, processor, model = tiny
    sampler = BatchSampler(_pools(), processor, seed=0)
    schedule = alternating_schedule(1, 1, 1)
    for index, phase in enumerate(schedule.phases):
        params = apply_phase(model, phase)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        expected = {n for n, _ in model.named_parameters() if _group_of(n) in phase.train}
        assert trainable == expected, phase.name
        assert {_group_of(n) for n in trainable} == set(phase.train)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = torch.optim.SGD(params, lr=0.5)
        model.train()
        _, examples = sampler.batch(index, phase.tasks, 2)
        loss = model(**processor.collate(examples)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
        assert changed <= expected, f"{phase.name} changed frozen tensors: {sorted(changed - expected)[:3]}"
        for group in phase.train:  # every group of the phase actually moved
            assert any(_group_of(n) == group for n in changed), (phase.name, group)


def test_schedule_tasks_and_lookup():
    alt = alternating_schedule(3, 2, 1)
    assert [p.name for p in alt.phases] == ["speech", "emotion", "joint"]
    assert set(alt.phases[0].tasks) == {"asr"}
    assert set(alt.phases[1].tasks) == {"emotion", "emotion_reasoning"}
    assert alt.phases[0].train == ("semantic", "lora") and alt.phases[2].train == GROUPS
    assert (
        alt.locate(0) == (0, 0)
        and alt.locate(3) == (1, 0)
        and alt.locate(5) == (2, 0)
        and alt.locate(6) == (3, 0)
    )
    assert joint_schedule(6).total_steps == alt.total_steps == build_schedule("joint", [3, 2, 1]).total_steps


def test_aux_phase_trains_the_emotion_decision_without_the_lm(tiny, monkeypatch):
    """``emotion-aux``: the paralinguistic branch and the head move; the semantic adapter and LoRA do
    not, and the LM is never run (that is what makes the phase cheap)."""
    _, processor, model = tiny
    schedule = build_schedule("alternating", [1, 1, 1], aux_steps=2)
    assert [p.name for p in schedule.phases] == ["speech", "emotion", "emotion-aux", "joint"]
    phase = schedule.phases[2]
    assert phase.objective == "aux" and set(phase.tasks) == {"emotion"}
    assert phase.train == ("paralinguistic", "aux_head")
    assert [p.name for p in build_schedule("joint", [1, 1, 1], aux_steps=2).phases] == [
        "emotion-aux",
        "joint",
    ]

    def no_lm(*args, **kwargs):
        raise AssertionError("the aux objective must not run the language model")

    monkeypatch.setattr(model.language_model, "forward", no_lm)
    params = apply_phase(model, phase)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, examples = BatchSampler(_pools(), processor, seed=0).batch(0, phase.tasks, 2)
    optimizer = torch.optim.SGD(params, lr=0.5)
    loss = model.aux_loss(**processor.collate(examples))
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert {_group_of(n) for n in changed} == {"paralinguistic", "aux_head"}


def test_unknown_objective_is_refused():
    import pytest

    from perception.finetune.schedule import Phase

    with pytest.raises(ValueError, match="objective"):
        Phase("x", {"emotion": 1.0}, ("aux_head",), 1, objective="contrastive")


def test_a_phase_of_zero_steps_is_skipped():
    from perception.finetune.schedule import build_schedule

    schedule = build_schedule("alternating", [2, 3, 0], aux_steps=4)  # speech, emotion, emotion-aux, no joint
    assert [p.name for p in schedule.phases] == ["speech", "emotion", "emotion-aux", "joint"]
    assert schedule.total_steps == 9
    assert schedule.locate(4) == (1, 2) and schedule.locate(5) == (2, 0) and schedule.locate(8) == (2, 3)
    assert schedule.locate(9) == (len(schedule.phases), 0)  # done: the joint phase never runs


def test_head_phase_refits_only_the_head_on_frozen_towers_in_eval_mode(tiny, tmp_path):
    """``emotion-head`` ends the schedule: the aux head alone moves, the towers run in eval mode (their
    dropout off and their BatchNorm statistics untouched), and the LM never runs."""
    from dataclasses import replace

    from perception.finetune.schedule import Schedule, head_phase
    from perception.finetune.trainer import TrainConfig, Trainer

    _, processor, model = tiny
    schedule = build_schedule("alternating", [1, 1, 1], aux_steps=1, head_steps=3)
    assert [p.name for p in schedule.phases][-2:] == ["joint", "emotion-head"]
    phase = schedule.phases[-1]
    assert phase == head_phase(3) and phase.train == ("aux_head",) and phase.objective == "aux"
    assert phase.frozen_eval and phase.batch_size == 128 and phase.lr == 3e-4
    assert build_schedule("joint", [1, 1, 1], head_steps=2).phases[-1].name == "emotion-head"

    model.train()
    model.train_groups_only(phase.train)
    assert model.aux_head.training and not model.paralinguistic_tower.training
    assert not model.language_model.training and not model.semantic_projector.training

    tower_norm = model.paralinguistic_tower.input_norm
    stats = tower_norm.running_mean.clone(), tower_norm.running_var.clone()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run = Schedule([replace(phase, steps=2, batch_size=2)])
    config = TrainConfig(tmp_path / "run", run, batch_size=2, save_every=0, progress=False)
    Trainer(model, BatchSampler(_pools(), processor, seed=0), config).train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and {_group_of(n) for n in changed} == {"aux_head"}
    assert torch.equal(tower_norm.running_mean, stats[0]) and torch.equal(tower_norm.running_var, stats[1])


def test_explain_phase_trains_lora_alone_on_the_reasoning_task(tiny) -> None:
    from perception.finetune.schedule import explain_phase

    _, processor, model = tiny
    schedule = build_schedule("alternating", [1, 1, 1], head_steps=2, explain_steps=3)
    assert [p.name for p in schedule.phases][-2:] == ["emotion-head", "explain"]
    phase = schedule.phases[-1]
    assert phase == explain_phase(3) and phase.train == ("lora",) and phase.frozen_eval
    assert set(phase.tasks) == {"emotion_reasoning"} and phase.objective == "lm"
    model.train()
    model.train_groups_only(phase.train)
    assert model.language_model.training and not model.paralinguistic_tower.training
    params = apply_phase(model, phase)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, examples = BatchSampler(_pools(), processor, seed=0).batch(0, phase.tasks, 2)
    optimizer = torch.optim.SGD(params, lr=0.5)
    model(**processor.collate(examples)).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and {_group_of(n) for n in changed} == {"lora"}
