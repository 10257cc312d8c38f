"""The task-alternating training schedule (and the joint baseline it is compared with).

A schedule is a list of :class:`Phase`: which tasks are sampled (with weights) and which parameter groups
of :meth:`DualEncoderForEmotionReasoning.trainable_groups` train. The default alternating schedule:

1. ``speech``: ASR; the semantic branch (adapter, and the encoder when configured trainable) + LoRA.
2. ``emotion``: emotion label and emotion reasoning; the paralinguistic branch + LoRA + aux head.
3. ``joint``: every task; every group.

The joint baseline is one phase: every task, every group, for the same total number of steps. The LoRA
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

    def __post_init__(self) -> None:
        unknown = set(self.train) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown parameter group(s) {sorted(unknown)} (known: {', '.join(GROUPS)})")
        self.train = tuple(self.train)


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


def alternating_schedule(speech_steps: int, emotion_steps: int, joint_steps: int) -> Schedule:
    return Schedule(
        [
            Phase("speech", {"asr": 1.0}, ("semantic", "lora"), speech_steps),
            Phase(
                "emotion",
                {"emotion": 0.5, "emotion_reasoning": 0.5},
                ("paralinguistic", "lora", "aux_head"),
                emotion_steps,
            ),
            Phase("joint", {"asr": 1 / 3, "emotion": 1 / 3, "emotion_reasoning": 1 / 3}, GROUPS, joint_steps),
        ]
    )


def joint_schedule(steps: int) -> Schedule:
    return Schedule(
        [Phase("joint", {"asr": 1 / 3, "emotion": 1 / 3, "emotion_reasoning": 1 / 3}, GROUPS, steps)]
    )


def build_schedule(kind: str, steps: list[int]) -> Schedule:
    """``"alternating"`` with 1 (split evenly) or 3 step counts, ``"joint"`` with their total."""
    if kind == "alternating":
        speech, emotion, joint = steps if len(steps) == 3 else [max(1, steps[0] // 3)] * 3
        return alternating_schedule(speech, emotion, joint)
    if kind == "joint":
        return joint_schedule(sum(steps))
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
