"""The task-alternating training schedule (and the joint baseline it is compared with).

A schedule is a list of :class:`Phase`: which tasks are sampled (with weights) and which parameter groups
of :meth:`DualEncoderForEmotionReasoning.trainable_groups` train. The default alternating schedule:

1. ``speech``: ASR; the semantic branch (adapter, and the encoder when configured trainable) + LoRA.
2. ``emotion``: emotion label and emotion reasoning; the paralinguistic branch + LoRA + aux head.
3. ``joint``: every task; every group.

With ``aux_steps`` an ``emotion-aux`` phase runs before ``joint``: the emotion label through the aux head
alone (no LM pass, so a step costs milliseconds instead of seconds), training both branches' adapters,
the paralinguistic tower and the head. It is how a CPU affords thousands of emotion steps; the LM phases
around it teach the LM to read the same audio tokens and to explain.

With ``head_steps`` an ``emotion-head`` phase ends the schedule: the aux head alone, on the towers as
the LM phases left them (frozen), with large batches and a low learning rate. The LM phases move the
towers under the head (and the head with them, at the LM's small batches); this last phase refits the
head to the final towers, the way a probe is fitted on a frozen encoder.

With ``explain_steps`` an ``explain`` phase follows: the ``emotion_reasoning`` task alone, LoRA alone, the
towers in eval mode. It teaches the LM the evidence format on top of everything else without moving what
the scores come from.

The joint baseline is one phase: every task, every group, for the same total number of steps (after the
same ``emotion-aux`` phase, when there is one). The LoRA
adapters are shared across phases, so phase 2 starts from what phase 1 taught the LM about audio tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

GROUPS: tuple[str, ...] = ("semantic", "paralinguistic", "lora", "aux_head")


@dataclass
class Phase:
    name: str
    tasks: dict[str, float]  # task -> sampling weight
    train: tuple[str, ...]  # parameter groups that receive gradients
    steps: int
    lr: float | None = None  # None: the trainer's learning rate
    objective: str = "lm"  # "lm": the LM loss (+ weighted aux loss); "aux": the aux head's loss alone
    batch_size: int | None = None  # None: the trainer's batch size
    frozen_eval: bool = False  # modules outside ``train`` run in eval mode (no dropout, fixed statistics)

    def __post_init__(self) -> None:
        unknown = set(self.train) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown parameter group(s) {sorted(unknown)} (known: {', '.join(GROUPS)})")
        self.train = tuple(self.train)
        if self.objective not in ("lm", "aux"):
            raise ValueError(f"unknown objective {self.objective!r} (lm, aux)")


@dataclass
class Schedule:
    phases: list[Phase] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def locate(self, global_step: int) -> tuple[int, int]:
        """``(phase index, step within the phase)`` of a global step (``len(phases)`` when done)."""
        for i, phase in enumerate(self.phases):
            if global_step < phase.steps:
                return i, global_step
            global_step -= phase.steps
        return len(self.phases), 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Schedule:
        return cls([Phase(**p) for p in data["phases"]])


def aux_phase(steps: int, batch_size: int | None = 32) -> Phase:
    groups = ("paralinguistic", "aux_head")
    return Phase("emotion-aux", {"emotion": 1.0}, groups, steps, objective="aux", batch_size=batch_size)


def head_phase(steps: int, batch_size: int | None = 128, lr: float | None = 3e-4) -> Phase:
    return Phase(
        "emotion-head", {"emotion": 1.0}, ("aux_head",), steps, lr, "aux", batch_size, frozen_eval=True
    )


def explain_phase(steps: int) -> Phase:
    return Phase("explain", {"emotion_reasoning": 1.0}, ("lora",), steps, frozen_eval=True)


def _finish(phases: list[Phase], head_steps: int, explain_steps: int) -> Schedule:
    if head_steps:
        phases.append(head_phase(head_steps))
    if explain_steps:
        phases.append(explain_phase(explain_steps))
    return Schedule(phases)


def alternating_schedule(
    speech_steps: int,
    emotion_steps: int,
    joint_steps: int,
    aux_steps: int = 0,
    head_steps: int = 0,
    explain_steps: int = 0,
) -> Schedule:
    phases = [
        Phase("speech", {"asr": 1.0}, ("semantic", "lora"), speech_steps),
        Phase(
            "emotion",
            {"emotion": 0.5, "emotion_reasoning": 0.5},
            ("paralinguistic", "lora", "aux_head"),
            emotion_steps,
        ),
    ]
    if aux_steps:
        phases.append(aux_phase(aux_steps))
    phases.append(
        Phase("joint", {"asr": 1 / 3, "emotion": 1 / 3, "emotion_reasoning": 1 / 3}, GROUPS, joint_steps)
    )
    return _finish(phases, head_steps, explain_steps)


def joint_schedule(steps: int, aux_steps: int = 0, head_steps: int = 0, explain_steps: int = 0) -> Schedule:
    phases = [aux_phase(aux_steps)] if aux_steps else []
    phases.append(Phase("joint", {"asr": 1 / 3, "emotion": 1 / 3, "emotion_reasoning": 1 / 3}, GROUPS, steps))
    return _finish(phases, head_steps, explain_steps)


def build_schedule(
    kind: str, steps: list[int], aux_steps: int = 0, head_steps: int = 0, explain_steps: int = 0
) -> Schedule:
    """``"alternating"`` with 1 (split evenly) or 3 step counts, ``"joint"`` with their total; both with
    an ``emotion-aux`` phase of ``aux_steps``, then ``emotion-head`` and ``explain`` phases of
    ``head_steps`` and ``explain_steps`` at the end, when those are > 0."""
    if kind == "alternating":
        speech, emotion, joint = steps if len(steps) == 3 else [max(1, steps[0] // 3)] * 3
        return alternating_schedule(speech, emotion, joint, aux_steps, head_steps, explain_steps)
    if kind == "joint":
        return joint_schedule(sum(steps), aux_steps, head_steps, explain_steps)
    raise ValueError(f"unknown schedule {kind!r} (alternating, joint)")


def apply_phase(model: nn.Module, phase: Phase) -> list[nn.Parameter]:
    """Switch ``requires_grad`` so exactly the phase's groups train; returns those parameters."""
    groups = model.trainable_groups()  # type: ignore[operator]
    for p in model.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    seen: set[int] = set()
    for name in phase.train:
        for p in groups[name]:
            if id(p) not in seen:
                seen.add(id(p))
                p.requires_grad_(True)
                params.append(p)
    return params
