"""Fine-tuning of the dual-encoder AudioLLM: corpora, feature caching, reasoning supervision, the
task-alternating schedule and the accelerate trainer. Run through ``emo-agent train`` (see
docs/audiollm.md)."""
