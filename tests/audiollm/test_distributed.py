"""`emo-agent train`'s trainer with two data-parallel processes (DDP over gloo, on the CPU): each process
trains on its own half of every global batch, their weights stay identical through the phase boundaries,
and the run folder is written once. The processes are started by torchrun, which is what `accelerate
launch` runs for configs/accelerate/multi_gpu.yaml (accelerate itself starts CPU processes only through
mpirun), with ``ACCELERATE_USE_CPU`` in place of GPUs. The accelerate configs are checked to load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_the_accelerate_configs_load(path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 2 and config.num_machines >= 1
    assert str(config.distributed_type) in ("DistributedType.MULTI_GPU", "DistributedType.DEEPSPEED")


def launch(out: Path, lm_dir: Path, schedule: str) -> list[dict]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "audiollm" / "distributed_train.py"),
        str(out),
        str(lm_dir),
        schedule,
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]


@pytest.mark.slow
def test_two_processes_split_each_batch_and_stay_in_step(tmp_path: Path, tiny_lm_dir: Path) -> None:
    ranks = launch(tmp_path, tiny_lm_dir, "alternating")  # three phases: the model is re-wrapped twice
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["steps"] == ranks[1]["steps"] == 6
    assert "MULTI_CPU" in ranks[0]["distributed_type"]
    for mine, theirs in zip(ranks[0]["seen"], ranks[1]["seen"], strict=True):
        assert mine != theirs  # different halves of the same global batch
    assert ranks[0]["digest"] == pytest.approx(ranks[1]["digest"], rel=1e-9)  # gradients were averaged
    assert (tmp_path / "final" / "trainable.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-6"]


def test_fsdp_and_phased_deepspeed_are_refused() -> None:
    from perception.finetune.schedule import alternating_schedule, joint_schedule
    from perception.finetune.trainer import check_distributed

    with pytest.raises(ValueError, match="FSDP"):
        check_distributed("FSDP", joint_schedule(3))
    with pytest.raises(ValueError, match="--schedule joint"):
        check_distributed("DEEPSPEED", alternating_schedule(1, 1, 1))
    check_distributed("DEEPSPEED", joint_schedule(3))
    check_distributed("MULTI_GPU", alternating_schedule(1, 1, 1))
