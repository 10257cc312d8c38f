"""Crisis language and the fixed ``safety`` policy.

When what the user says suggests a risk to life (suicide, self-harm, wanting to die, harming someone),
the reply is not generated: it is :data:`SAFETY_REPLY`, a fixed, caring text that points to help. The
check runs before every other policy rule, including rules and nodes added by extensions, and the graph
sends safety turns straight to a node that writes the fixed text (extension hook nodes are skipped).

Detection is deliberately broad and lexical (no model): a false alarm costs one unusually careful reply,
a miss could cost much more. Negated mentions ("I'm not suicidal") also match, on purpose.
"""

from __future__ import annotations

import re

from dialogue.events import Prosody

SAFETY_POLICY = "safety"

SAFETY_REPLY = (
    "I'm really glad you told me, and I'm worried about how you're feeling. You don't have to go "
    "through this alone. If you are in immediate danger, please call your local emergency number now. "
    "In the US you can call or text 988 to reach the Suicide and Crisis Lifeline, any time. "
    "Elsewhere, findahelpline.com lists free, confidential helplines. "
    "Could you reach out to one of them, or to someone you trust, right now?"
)
"""Said, word for word, whenever crisis language is heard. Never produced by the LLM."""

SAFETY_PROSODY = Prosody(length_scale=1.15, noise_scale=0.5, noise_w=0.6, volume=0.95)

_PATTERNS: tuple[str, ...] = (
    r"\bsuicid\w*",
    r"\bkill(?:ing)?\s+my\s*self\b",
    r"\bend(?:ing)?\s+(?:it\s+all|my\s+(?:own\s+)?life|things)\b",
    r"\btak(?:e|ing)\s+my\s+(?:own\s+)?life\b",
    r"\b(?:want|wanna|ready|wish)\s+(?:to\s+)?(?:die|be\s+dead)\b",
    r"\bwant\s+to\s+disappear\s+forever\b",
    r"\bbetter\s+off\s+dead\b",
    r"\b(?:don'?t|do\s+not|no\s+longer)\s+want\s+to\s+(?:live|be\s+alive|exist|wake\s+up)\b",
    r"\bno\s+(?:reason|point)\s+(?:to|in)\s+(?:live|living|going\s+on)\b",
    r"\bself[-\s]?harm\w*",
    r"\b(?:hurt|harm|cut|burn)\w*\s+my\s*self\b",
    r"\boverdos\w*",
    r"\b(?:kill|murder|shoot|stab|hurt|harm)(?:ing|bing)?\s+"
    r"(?:him|her|them|someone|somebody|people|everyone|my\s+\w+)\b",
)
_CRISIS = re.compile("|".join(_PATTERNS), re.IGNORECASE)


def is_crisis(text: str) -> bool:
    """True when ``text`` contains crisis language (see the module docstring)."""
    return bool(_CRISIS.search(" ".join(text.replace("’", "'").split())))
