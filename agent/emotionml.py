"""EmotionML 1.0 (W3C) export of a trajectory's user turns.

Each perceived user turn becomes one ``<emotion>`` with its category (the product's six labels, declared
as an in-document vocabulary, ``value`` = probability), the two dimensions valence and arousal mapped from
[-1, 1] onto EmotionML's [0, 1] scale, absolute ``start``/``end`` in milliseconds since the epoch, the
transcript, reasoning, model and the assistant's reply policy (``interrupted="true"`` when cut off) in
``<info>``, and the turn id as ``<reference>``. ``start``/``end`` are the rows' ``t_start``/``t_end`` × 1000.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from agent.trajectory import TurnRecord
from perception.types import LABELS

NS = "http://www.w3.org/2009/10/emotionml"


def to_emotionml(records: list[TurnRecord]) -> str:
    ET.register_namespace("", NS)
    root = ET.Element(
        f"{{{NS}}}emotionml",
        {
            "version": "1.0",
            "category-set": "#emo-agent-labels",
            "dimension-set": "#emo-agent-dimensions",
        },
    )
    cats = ET.SubElement(root, f"{{{NS}}}vocabulary", {"type": "category", "id": "emo-agent-labels"})
    for label in LABELS:
        ET.SubElement(cats, f"{{{NS}}}item", {"name": label})
    dims = ET.SubElement(root, f"{{{NS}}}vocabulary", {"type": "dimension", "id": "emo-agent-dimensions"})
    for name in ("valence", "arousal"):
        ET.SubElement(dims, f"{{{NS}}}item", {"name": name})
    replies = {r.turn_id: r for r in records if r.speaker == "assistant"}
    for r in records:
        if r.speaker != "user" or r.label is None:
            continue
        emotion = ET.SubElement(
            root,
            f"{{{NS}}}emotion",
            {
                "id": f"{r.session_id}-{r.turn_id}",
                "start": str(int(r.t_start * 1000)),
                "end": str(int(r.t_end * 1000)),
            },
        )
        ET.SubElement(
            emotion,
            f"{{{NS}}}category",
            {"name": r.label, "value": f"{(r.scores or {}).get(r.label, 1.0):.4f}"},
        )
        for name, value in (("valence", r.valence), ("arousal", r.arousal)):
            if value is not None:
                ET.SubElement(
                    emotion, f"{{{NS}}}dimension", {"name": name, "value": f"{(value + 1) / 2:.4f}"}
                )
        info = ET.SubElement(emotion, f"{{{NS}}}info")
        ET.SubElement(info, "transcript").text = r.transcript
        if r.reasoning:
            ET.SubElement(info, "reasoning").text = r.reasoning
        if r.model:
            ET.SubElement(info, "model").text = r.model
        reply = replies.get(r.turn_id)
        if reply is not None and reply.policy:
            attrs = {"interrupted": "true"} if reply.interrupted else {}
            ET.SubElement(info, "policy", attrs).text = reply.policy
        ET.SubElement(emotion, f"{{{NS}}}reference", {"uri": f"#turn-{r.turn_id}", "role": "expressedBy"})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
