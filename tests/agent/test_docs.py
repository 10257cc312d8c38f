"""docs/configuration.md documents every field of the config tree, and nothing that is not in it."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from agent.config import Settings

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
        heading = re.match(r"## `(EMO_[A-Z]+)__\*`", line)
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
