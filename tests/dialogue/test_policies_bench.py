"""The scripted-trajectory table in docs/dialogue.md is what ``python -m bench.policies`` produces."""

from __future__ import annotations

from pathlib import Path

from bench.policies import SCENARIOS, markdown, run

DOCS = Path(__file__).resolve().parents[2] / "docs" / "dialogue.md"


async def test_scenarios_choose_the_expected_policies() -> None:
    rows = {row["scenario"]: row["policies"] for row in await run()}
    assert len(SCENARIOS) >= 6
    assert rows["escalating anger"][-1] == "de_escalate"
    assert rows["sustained sadness (low energy)"] == ["empathize"] * 4
    assert rows["recovery after sadness"][-2:] == ["encourage", "encourage"]
    assert rows["crisis language"][-1] == "safety"
    assert rows["falling valence, no extension"][-1] != "check_in"
    assert rows["falling valence + check-in extension"][-1] == "check_in"
    assert rows["injection attempt while angry"] == ["de_escalate"]


async def test_docs_table_is_current() -> None:
    text = DOCS.read_text()
    table = text.split("<!-- policies-table:start -->\n", 1)[1].split("\n<!-- policies-table:end -->", 1)[0]
    assert table.strip() == markdown(await run()).strip(), "rerun: python -m bench.policies --markdown"
