"""``python -m agent`` is ``emo-agent``."""

from agent.cli import main

raise SystemExit(main())
