"""A tiny resumable training run: stop after a step, resume, the step counter continues."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perception.finetune.data import BatchSampler, build_items
from perception.finetune.datasets import Clip
from perception.finetune.features import ClipFeatures
from perception.finetune.schedule import alternating_schedule
from perception.finetune.supervision import TemplateTeacher
from perception.finetune.trainer import TrainConfig, Trainer, latest_checkpoint
from perception.types import LABELS
from tests.audiollm.conftest import fake_features


@pytest.fixture()
def pools(tmp_path):
    rng = np.random.default_rng(3)
    clips, feats = [], []
    for i, label in enumerate(["angry", "sad", "happy", "neutral"]):
        sem, mel = fake_features(0.6 + 0.2 * i, rng)
        cues = {"pitch_mean": float(rng.normal()), "loudness_mean": float(rng.normal() * 3)}
        clips.append(Clip(tmp_path / f"{i}.wav", label, "kids are talking by the door"))
        feats.append(ClipFeatures(sem, mel, cues, "kids are talking by the door"))
    items, stats = build_items(clips, feats, TemplateTeacher(), LABELS)
    assert stats.accepted == 4 and {k: len(v) for k, v in items.items()} == {
        "asr": 4,
        "emotion": 4,
        "emotion_reasoning": 4,
    }
    return items


def test_two_step_run_stops_and_resumes(tmp_path, tiny, pools):
    _, processor, model = tiny
    out = tmp_path / "run"
    schedule = alternating_schedule(1, 1, 0)  # step 0: speech phase, step 1: emotion phase
    config = TrainConfig(out, schedule, batch_size=2, lr=1e-2, save_every=0, progress=False)
    first = Trainer(model, BatchSampler(pools, processor), config)
    state = first.train(max_steps=1)
    assert state.global_step == 1
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and checkpoint.name == "checkpoint-1"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 1
    assert not (out / "final").exists()

    # a new process: fresh model, same run folder
    from perception.audiollm import DualEncoderForEmotionReasoning
    from tests.audiollm.conftest import load_lm

    fresh = DualEncoderForEmotionReasoning(model.config, load_lm(model.config.language_model))
    second = Trainer(fresh, BatchSampler(pools, processor), config)
    state = second.train()
    assert state.global_step == 2 and len(state.losses) == 2
    assert state.losses[0] == first.state.losses[0]  # the history came back with the checkpoint
    assert (out / "final" / "trainable.safetensors").is_file()
    assert latest_checkpoint(out).name == "checkpoint-2"
    # resuming a finished run trains no further
    again = Trainer(fresh, BatchSampler(pools, processor), config).train()
    assert again.global_step == 2 and again.losses == state.losses


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    from perception.finetune.cli import main

    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert main(["--out", str(tmp_path / "run"), "--data", "nope=/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("emo-agent train: nothing to train on")
    assert "unknown corpus 'nope'" in err[1]


def test_eval_step_scores_held_out_clips_into_json(tmp_path, tiny, pools) -> None:
    from perception.finetune.evaluation import EvalItem, HeldOutEvaluator

    _, processor, model = tiny
    held = [EvalItem(i.semantic, i.paralinguistic, i.emotion or "") for i in pools["emotion"]]
    out = tmp_path / "run"
    config = TrainConfig(
        out, alternating_schedule(1, 1, 1), batch_size=2, save_every=0, eval_every=2, progress=False
    )
    Trainer(
        model, BatchSampler(pools, processor), config, evaluator=HeldOutEvaluator(held, processor)
    ).train()
    report = json.loads((out / "eval.json").read_text())
    assert [r["step"] for r in report["history"]] == [2, 3]  # every 2 steps, and the final model
    latest = report["latest"]
    assert latest["step"] == 3 and latest["n"] == len(held)
    assert all(0.0 <= latest[k] <= 1.0 for k in ("ua", "wa", "macro_f1"))
    assert sum(sum(row.values()) for row in latest["confusion"].values()) == len(held)
    assert (out / "final" / "tokenizer_config.json").is_file()  # the tokenizer with the audio placeholder

    # a finished run's training record carries its end and held-out figures (as `emo-agent train` does)
    from perception.finetune.cli import TRAINING_META, finish_training_meta

    (out / TRAINING_META).write_text(json.dumps({"command": "emo-agent train --out run"}))
    meta = finish_training_meta(out)
    assert meta == json.loads((out / TRAINING_META).read_text())
    assert meta["command"] == "emo-agent train --out run" and meta["finished"].endswith("Z")
    assert meta["held_out_eval"] == {k: latest[k] for k in ("step", "n", "ua", "wa", "macro_f1")}


def test_eval_metrics_are_the_eval_reports() -> None:
    from perception.evaluation import confusion_matrix, metrics_from_confusion
    from perception.finetune.evaluation import classification_report

    true, pred = ["angry", "angry", "sad", "happy"], ["angry", "sad", "sad", "angry"]
    report = classification_report(true, pred, LABELS)
    expected = metrics_from_confusion(confusion_matrix(true, pred, LABELS))
    assert report["ua"] == round(expected["ua"], 4) and report["wa"] == 0.5


def test_actor_held_out_split_keeps_speakers_apart(tmp_path) -> None:
    from perception.finetune.evaluation import holdout_speakers

    clips = [Clip(tmp_path / f"{s}-{i}.wav", "sad", None, s) for s in "abcd" for i in range(3)]
    train, held = holdout_speakers(clips, 1, seed=1)
    assert len(held) == 3 and len(train) == 9
    assert {c.speaker for c in held}.isdisjoint({c.speaker for c in train})
    with pytest.raises(ValueError):
        holdout_speakers(clips, 4)


def test_cli_schedule_options_reach_the_phases() -> None:
    import argparse

    from perception.finetune.cli import add_train_parser, schedule_from_args

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["train", "--out", "run", "--steps", "2,3,1", "--aux-steps", "5", "--aux-batch-size", "16"]
        + ["--head-steps", "7", "--head-batch-size", "64", "--head-lr", "0.0005"]
    )
    schedule = schedule_from_args(args)
    assert [(p.name, p.steps) for p in schedule.phases] == [
        ("speech", 2),
        ("emotion", 3),
        ("emotion-aux", 5),
        ("joint", 1),
        ("emotion-head", 7),
    ]
    aux, head = schedule.phases[2], schedule.phases[4]
    assert aux.batch_size == 16 and aux.lr is None
    assert head.batch_size == 64 and head.lr == 0.0005 and head.frozen_eval
    args = parser.parse_args(["train", "--out", "run", "--schedule", "joint", "--steps", "4"])
    assert [p.name for p in schedule_from_args(args).phases] == ["joint"]


def test_training_record_keeps_its_start_when_a_run_resumes(tmp_path) -> None:
    import argparse

    from perception.finetune.cli import (
        TRAINING_META,
        add_train_parser,
        schedule_from_args,
        write_training_meta,
    )
    from perception.finetune.trainer import STATE_NAME

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    out = tmp_path / "run"
    out.mkdir()
    args = parser.parse_args(["train", "--out", str(out), "--head-steps", "3"])
    clips = [Clip(tmp_path / "a.wav", "sad", None, "1001")]
    write_training_meta(out, args, clips, [], schedule_from_args(args))
    first = json.loads((out / TRAINING_META).read_text())
    assert "resumed" not in first and first["head_batch_size"] == 128 and first["head_lr"] == 3e-4
    assert first["schedule"]["phases"][-1]["name"] == "emotion-head"

    first["started"] = "2026-01-01T00:00:00Z"
    (out / TRAINING_META).write_text(json.dumps(first))
    (out / "checkpoint-7").mkdir()
    (out / "checkpoint-7" / STATE_NAME).write_text(json.dumps({"global_step": 7}))
    write_training_meta(out, args, clips, [], schedule_from_args(args))
    second = json.loads((out / TRAINING_META).read_text())
    assert second["started"] == "2026-01-01T00:00:00Z"
    assert [r["step"] for r in second["resumed"]] == [7] and second["resumed"][0]["at"].endswith("Z")
    write_training_meta(out, args, clips, [], schedule_from_args(args), resume=False)  # --no-resume
    assert json.loads((out / TRAINING_META).read_text())["started"] != "2026-01-01T00:00:00Z"


def test_a_run_started_from_another_records_where_its_weights_came_from(tmp_path, capsys) -> None:
    import argparse

    from perception.finetune.cli import (
        TRAINING_META,
        add_train_parser,
        schedule_from_args,
        write_training_meta,
    )

    source = tmp_path / "source"
    (source / "final").mkdir(parents=True)
    (source / "final" / "trainable.safetensors").write_bytes(b"")
    (source / TRAINING_META).write_text(json.dumps({"command": "emo-agent train --out source"}))
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    out = tmp_path / "run"
    out.mkdir()
    args = parser.parse_args(["train", "--out", str(out), "--init-from", str(source), "--pooled-layers", "2"])
    write_training_meta(out, args, [], [], schedule_from_args(args))
    record = json.loads((out / TRAINING_META).read_text())
    assert record["init_from"]["path"] == str(source / "final")  # the run folder's final model
    assert record["init_from"]["training"]["command"] == "emo-agent train --out source"
    from perception.finetune.cli import main

    assert main(["--out", str(out), "--data", "crema-d=/x", "--init-from", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--init-from" in err and "no trained weights" in err
    # a layer tiny.en does not have: one line, before any training
    clip = tmp_path / "c" / "1001_DFA_ANG_XX.wav"
    clip.parent.mkdir()
    clip.write_bytes(b"")
    argv = ["--out", str(tmp_path / "r2"), "--data", f"crema-d={clip.parent}", "--pooled-layers", "9"]
    assert main(argv) == 2
    assert "pooled layers must be in 0..4" in capsys.readouterr().err
