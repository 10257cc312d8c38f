"""docs/configuration.md documents every field of the config tree, and nothing that is not in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.config import Settings

REPO = Path(__file__).resolve().parents[2]

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def settings_variables() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= {f"EMO_{name.upper()}__{sub.upper()}" for sub in annotation.model_fields}
        else:
            names.add(f"EMO_{name.upper()}")
    return names


def documented_variables() -> set[str]:
    names: set[str] = set()
    section = ""
    for line in DOC.read_text().splitlines():
        heading = re.match(r"## `(EMO_[A-Z_]+)__\*`", line)
        if heading:
            section = heading.group(1)
        elif line.startswith("## "):
            section = ""
        row = re.match(r"\| `([A-Z_]+)` \|", line)
        if row:
            names.add(f"{section}__{row.group(1)}" if section else row.group(1))
    return names


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    code, doc = settings_variables(), documented_variables()
    assert code - doc == set(), f"undocumented settings: {sorted(code - doc)}"
    assert doc - code == set(), f"documented but not in the config tree: {sorted(doc - code)}"


def test_the_contracts_export_columns_are_the_codes_in_order() -> None:
    from agent.trajectory import EXPORT_COLUMNS

    text = (REPO / "docs" / "contracts.md").read_text()
    section = text[text.index("## Trajectory export rows") :]
    listed = section[section.index("order: `") + len("order: `") :].split("`", 1)[0]
    assert [c.strip() for c in listed.split(",")] == list(EXPORT_COLUMNS)


def test_the_contracts_perception_example_is_a_valid_perception() -> None:
    import json

    from perception.types import Perception

    text = (REPO / "docs" / "contracts.md").read_text()
    section = text[text.index("## Perception (JSON)") :]
    start = section.index("```json") + len("```json")
    example = section[start : section.index("```", start)]
    perception = Perception.model_validate(json.loads(example))
    assert sum(perception.emotion.scores.values()) == pytest.approx(1.0, abs=1e-3)
    assert perception.emotion.label == max(perception.emotion.scores, key=perception.emotion.scores.get)
