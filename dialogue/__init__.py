"""Emotion-aware dialogue: a LangGraph graph that remembers the conversation (in Redis), chooses a
response policy from the perception and the emotional history, and writes the reply."""
