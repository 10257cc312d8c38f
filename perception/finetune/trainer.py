"""The accelerate trainer: phases of the schedule, tqdm progress, checkpoints, resume.

A run writes into ``output_dir``::

    checkpoint-<step>/   config.json, trainable.safetensors (the model's trained parts),
                         optimizer.pt, trainer_state.json (global step, phase, schedule, recent losses)
    final/               config.json, trainable.safetensors once the schedule is done (+ the tokenizer)
    eval.json            held-out UA / WA / macro-F1 per evaluated step, when an evaluator is given

``Trainer.train()`` resumes from the newest ``checkpoint-*`` when one exists: the trained parts and the
optimizer state are restored and the step counter continues; batches depend only on (seed, step), so the
resumed run sees the same data it would have seen. The optimizer restarts at each phase boundary (its
parameter set changes). On several GPUs / nodes the same code runs under ``accelerate launch`` with
data parallelism (DDP; configs/accelerate/, docs/scaling.md): each process trains on its own slice of a
global batch of ``batch_size`` x processes, and the model is re-wrapped at each phase so the wrapper sees
that phase's parameters. FSDP and DeepSpeed cannot be re-wrapped that way; the trainer accepts them only for
a one-phase schedule (``--schedule joint``).

With an ``evaluator`` (:class:`perception.finetune.evaluation.HeldOutEvaluator`) the model is scored on
the held-out set every ``eval_every`` steps and once more at the end; each report gets its ``step`` and
is logged and appended to ``eval.json`` (``{"history": [...], "latest": {...}}``), resumed runs included.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from perception.audiollm.checkpoint import load_weights_into
from perception.audiollm.modeling import DualEncoderForEmotionReasoning
from perception.finetune.data import BatchSampler
from perception.finetune.schedule import Schedule, apply_phase

log = logging.getLogger(__name__)
STATE_NAME = "trainer_state.json"
EVAL_NAME = "eval.json"
Evaluator = Callable[[DualEncoderForEmotionReasoning], dict[str, Any]]


@dataclass
class TrainConfig:
    output_dir: Path
    schedule: Schedule
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    save_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    progress: bool = True
    eval_every: int = 0  # 0: evaluate only at the end (when an evaluator is given)


@dataclass
class TrainState:
    global_step: int = 0
    losses: list[float] = field(default_factory=list)  # last few hundred, for logs and tests

    def to_json(self, schedule: Schedule) -> str:
        return json.dumps(
            {"global_step": self.global_step, "losses": self.losses[-500:], "schedule": schedule.to_dict()},
            indent=2,
        )


def make_accelerator(grad_accum: int = 1):  # -> accelerate.Accelerator
    """The trainer's Accelerator: one process, or this one of an ``accelerate launch`` (or torchrun)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(
        gradient_accumulation_steps=grad_accum,
        # ASR batches leave the aux head and the paralinguistic branch without gradients
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def check_distributed(distributed_type, schedule: Schedule) -> None:
    """``ValueError`` for a launch this trainer cannot run: FSDP (its checkpoints are the unwrapped module's
    parameters, which FSDP shards), and DeepSpeed with more than one phase (each phase re-prepares the model,
    and DeepSpeed builds one engine per run). Data parallelism (DDP, any number of GPUs and nodes) runs
    every schedule."""
    kind = str(getattr(distributed_type, "value", distributed_type)).upper()
    if kind == "FSDP":
        raise ValueError(
            "the AudioLLM trainer does not run under FSDP (checkpoints would hold sharded parameters); "
            "launch with DDP (configs/accelerate/multi_gpu.yaml) or DeepSpeed ZeRO-2 and --schedule joint"
        )
    if kind == "DEEPSPEED" and len(schedule.phases) > 1:
        raise ValueError(
            f"DeepSpeed runs one phase per launch; this schedule has {len(schedule.phases)} "
            f"({', '.join(p.name for p in schedule.phases)}): use --schedule joint, or DDP for more phases"
        )


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = [p for p in Path(output_dir).glob("checkpoint-*") if (p / STATE_NAME).is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


class Trainer:
    def __init__(
        self,
        model: DualEncoderForEmotionReasoning,
        sampler: BatchSampler,
        config: TrainConfig,
        accelerator=None,  # accelerate.Accelerator; built here when None
        evaluator: Evaluator | None = None,
    ) -> None:
        self.model = model
        self.sampler = sampler
        self.config = config
        self.accelerator = accelerator or make_accelerator(config.grad_accum)
        self.evaluator = evaluator
        self.state = TrainState()
        self.optimizer: torch.optim.Optimizer | None = None
        check_distributed(self.accelerator.distributed_type, config.schedule)
        self._deepspeed = str(getattr(self.accelerator.distributed_type, "value", "")).upper() == "DEEPSPEED"

    # -- checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        path = Path(self.config.output_dir) / f"checkpoint-{self.state.global_step}"
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            acc.unwrap_model(self.model).save_pretrained(tmp)
            if self.optimizer is not None and not self._deepspeed:  # ZeRO partitions it per process
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / STATE_NAME).write_text(self.state.to_json(self.config.schedule))
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
            self._prune()
        acc.wait_for_everyone()
        return path

    def _prune(self) -> None:
        found = sorted(
            (p for p in Path(self.config.output_dir).glob("checkpoint-*") if (p / STATE_NAME).is_file()),
            key=lambda p: int(p.name.split("-")[-1]),
        )
        for old in found[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def resume(self, checkpoint: Path) -> None:
        data = json.loads((checkpoint / STATE_NAME).read_text())
        self.state = TrainState(int(data["global_step"]), list(data.get("losses", [])))
        load_weights_into(self.accelerator.unwrap_model(self.model), checkpoint)
        log.info("resumed from %s at step %d", checkpoint, self.state.global_step)

    # -- evaluation -----------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any] | None:
        """Score the held-out set now; log the report and add it to ``eval.json`` (main process)."""
        if self.evaluator is None:
            return None
        acc = self.accelerator
        acc.wait_for_everyone()
        report = None
        if acc.is_main_process:
            report = {"step": self.state.global_step, **self.evaluator(acc.unwrap_model(self.model))}
            log.info(
                "eval step %d: UA %.4f WA %.4f macro-F1 %.4f (n=%d)",
                report["step"],
                report["ua"],
                report["wa"],
                report["macro_f1"],
                report["n"],
            )
            path = Path(self.config.output_dir) / EVAL_NAME
            history = json.loads(path.read_text())["history"] if path.is_file() else []
            history = [r for r in history if r.get("step") != report["step"]] + [report]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"history": history, "latest": report}, indent=2) + "\n")
        acc.wait_for_everyone()
        return report

    # -- loop -----------------------------------------------------------------------------------------
    def _start_phase(self, index: int, optimizer_state: Path | None) -> None:
        phase = self.config.schedule.phases[index]
        model = self.accelerator.unwrap_model(self.model)
        params = apply_phase(model, phase)
        optimizer = torch.optim.AdamW(
            params, lr=phase.lr or self.config.lr, weight_decay=self.config.weight_decay
        )
        if optimizer_state is not None and optimizer_state.is_file():
            optimizer.load_state_dict(torch.load(optimizer_state, weights_only=True))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)

    def train(self, max_steps: int | None = None, resume: bool = True) -> TrainState:
        """Run the schedule from the current (or resumed) step; stop early after ``max_steps`` global
        steps (a checkpoint is written there), e.g. to split a run across sessions."""
        cfg, acc = self.config, self.accelerator
        optimizer_state = None
        if resume and (checkpoint := latest_checkpoint(cfg.output_dir)) is not None:
            self.resume(checkpoint)
            optimizer_state = checkpoint / "optimizer.pt"
        total = cfg.schedule.total_steps
        stop = min(total, max_steps) if max_steps is not None else total
        phase_index, step_in_phase = cfg.schedule.locate(self.state.global_step)
        current = -1
        bar = tqdm(
            total=total,
            initial=self.state.global_step,
            desc="train",
            unit="step",
            disable=not (cfg.progress and acc.is_main_process),
        )
        while self.state.global_step < stop:
            phase_index, step_in_phase = cfg.schedule.locate(self.state.global_step)
            if phase_index != current:
                self._start_phase(phase_index, optimizer_state if step_in_phase > 0 else None)
                current, optimizer_state = phase_index, None
            phase = cfg.schedule.phases[phase_index]
            self.model.train()
            if phase.frozen_eval:
                acc.unwrap_model(self.model).train_groups_only(phase.train)
            task, examples = self.sampler.batch(
                self.state.global_step,
                phase.tasks,
                phase.batch_size or cfg.batch_size,
                rank=acc.process_index,
                world=acc.num_processes,
            )
            batch = {k: v.to(acc.device) for k, v in self.sampler.processor.collate(examples).items()}
            with acc.accumulate(self.model):
                loss = self.model(**batch, aux_only=phase.objective == "aux").loss
                acc.backward(loss)
                if cfg.max_grad_norm and acc.sync_gradients:
                    acc.clip_grad_norm_(
                        [p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm
                    )
                self.optimizer.step()  # type: ignore[union-attr]
                self.optimizer.zero_grad()  # type: ignore[union-attr]
            self.state.global_step += 1
            self.state.losses.append(round(float(loss.detach()), 5))
            bar.update(1)
            bar.set_postfix(phase=phase.name, task=task, loss=f"{float(loss.detach()):.3f}")
            if cfg.save_every and self.state.global_step % cfg.save_every == 0:
                self.save_checkpoint()
            if cfg.eval_every and self.state.global_step % cfg.eval_every == 0:
                self.evaluate()
        bar.close()
        if latest_checkpoint(cfg.output_dir) != Path(cfg.output_dir) / f"checkpoint-{self.state.global_step}":
            self.save_checkpoint()  # where this run stopped, so the next one resumes (or knows it is done)
        finished = self.state.global_step >= total
        if finished and acc.is_main_process:
            final = acc.unwrap_model(self.model).save_pretrained(Path(cfg.output_dir) / "final")
            self.sampler.processor.tokenizer.save_pretrained(final)  # holds the audio placeholder
        if finished and self.evaluator is not None and self._last_eval_step() != self.state.global_step:
            self.evaluate()  # the final model is always scored once
        return self.state

    def _last_eval_step(self) -> int | None:
        path = Path(self.config.output_dir) / EVAL_NAME
        return json.loads(path.read_text())["latest"]["step"] if path.is_file() else None
