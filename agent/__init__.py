"""Wiring, configuration, the ``emo-agent`` CLI and the trajectory log."""

__version__ = "0.1.0"
