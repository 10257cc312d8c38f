"""One process of a data-parallel training run on tiny parts, as `accelerate launch` starts it
(tests/audiollm/test_distributed.py). Writes what this process trained on and its trained weights' digest
to ``OUT/rank<N>.json``.

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --cpu --num_processes 2 \\
        tests/audiollm/distributed_train.py OUT TINY_LM_DIR SCHEDULE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from perception.audiollm import DualEncoderForEmotionReasoning, DualEncoderProcessor  # noqa: E402
from perception.finetune.data import BatchSampler, build_items  # noqa: E402
from perception.finetune.datasets import Clip  # noqa: E402
from perception.finetune.features import ClipFeatures  # noqa: E402
from perception.finetune.schedule import alternating_schedule, joint_schedule  # noqa: E402
from perception.finetune.supervision import TemplateTeacher  # noqa: E402
from perception.finetune.trainer import TrainConfig, Trainer  # noqa: E402
from perception.types import LABELS  # noqa: E402
from tests.audiollm.conftest import fake_features, load_lm, make_tokenizer, tiny_config  # noqa: E402


class RecordingSampler(BatchSampler):
    """Notes a fingerprint of every example this process is given."""

    seen: list[list[float]] = []

    def batch(self, global_step, tasks, batch_size, rank=0, world=1):
        task, examples = super().batch(global_step, tasks, batch_size, rank, world)
        self.seen.append([round(float(e.semantic_features.sum()), 4) for e in examples])
        return task, examples


def main() -> None:
    out, lm_dir, schedule_name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    rng = np.random.default_rng(3)
    clips, feats = [], []
    for i in range(16):
        sem, mel = fake_features(0.6 + 0.05 * i, rng)
        cues = {"pitch_mean": float(rng.normal()), "loudness_mean": float(rng.normal() * 3)}
        clips.append(Clip(out / f"{i}.wav", LABELS[i % 4], "kids are talking by the door"))
        feats.append(ClipFeatures(sem, mel, cues, "kids are talking by the door"))
    pools, _ = build_items(clips, feats, TemplateTeacher(), LABELS)
    torch.manual_seed(0)  # the same initial weights on every process
    config = tiny_config(lm_dir)
    processor = DualEncoderProcessor(config, make_tokenizer())
    model = DualEncoderForEmotionReasoning(config, load_lm(lm_dir))
    schedule = alternating_schedule(2, 2, 2) if schedule_name == "alternating" else joint_schedule(3)
    sampler = RecordingSampler(pools, processor)
    trainer = Trainer(
        model, sampler, TrainConfig(out, schedule, batch_size=2, lr=1e-2, save_every=0, progress=False)
    )
    state = trainer.train()
    acc = trainer.accelerator
    trained = acc.unwrap_model(trainer.model)
    digest = sum(float(p.detach().double().abs().sum()) for p in trained.parameters() if p.requires_grad)
    record = {
        "rank": acc.process_index,
        "world": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "steps": state.global_step,
        "losses": state.losses,
        "seen": sampler.seen,
        "digest": digest,
    }
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
