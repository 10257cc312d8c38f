"""Pooled intermediate Whisper layers: the CTranslate2 weights read into torch, the stats, the aux head's
utterance input built from them, the feature cache completing them, and a run started from another's
weights with a wider head."""

from __future__ import annotations

import numpy as np
import pytest

from perception.audiollm import DualEncoderConfig, SemanticEncoderConfig
from perception.audiollm.processing import utterance_features
from perception.audiollm.whisper_layers import WhisperLayerStats, read_ctranslate2


@pytest.fixture(scope="module")
def tiny_whisper():
    from perception.asr import WhisperASR

    return WhisperASR("tiny.en", compute_type="float32")


@pytest.fixture(scope="module")
def speech(crema_dir) -> np.ndarray:
    from perception.audio import load_audio

    return load_audio(crema_dir / "audio" / "1001_IOM_ANG_XX.ogg")


@pytest.fixture(scope="module")
def all_layers() -> WhisperLayerStats:
    return WhisperLayerStats.for_whisper("tiny.en", None)


def test_ctranslate2_weights_read_back_whole() -> None:
    from perception.asr import resolve_model

    weights = read_ctranslate2(f"{resolve_model('tiny.en')}/model.bin")
    assert weights["encoder/conv1/weight"].shape == (384, 80, 3)
    assert weights["encoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)  # fused q, k, v
    assert np.isfinite(weights["encoder/layer_norm/gamma"].astype(np.float32)).all()


def test_torch_encoder_reproduces_the_ctranslate2_states(tiny_whisper, speech, all_layers) -> None:
    """The last block, through the final layer norm, is what CTranslate2 computes from the same weights."""
    import torch

    mel = tiny_whisper.mel(speech)
    reference = tiny_whisper.encode_compact(speech, mel)  # (T, 384), float32 CTranslate2
    enc = all_layers.encoder
    with torch.no_grad():
        x = torch.nn.functional.gelu(enc.conv1(torch.from_numpy(mel)[None]))
        x = torch.nn.functional.gelu(enc.conv2(x)).transpose(1, 2)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            x = layer(x, attention_mask=None)
            x = x[0] if isinstance(x, tuple) else x
        ours = enc.layer_norm(x)[0].numpy()
    n = min(len(ours), len(reference))
    assert np.abs(ours[:n] - reference[:n]).max() < 0.05
    # one row per layer, 0..4, each the mean then the std of that layer's states
    stats = all_layers.stats(mel)
    assert stats.shape == (5, 768) and np.isfinite(stats).all()
    assert not np.allclose(stats[2], stats[4])  # layers differ


def test_only_the_chosen_layers_are_pooled(speech, tiny_whisper, all_layers) -> None:
    mel = tiny_whisper.mel(speech)
    two = WhisperLayerStats.for_whisper("tiny.en", [2, 0])
    np.testing.assert_allclose(two.stats(mel), all_layers.stats(mel)[[2, 0]], atol=1e-5)
    assert two.vector(mel).shape == (2 * 768,)
    assert np.all(two.stats(mel)[:, 384:] >= 0)  # the second half of a row is a standard deviation


def test_bad_layers_and_bad_mel_are_errors(all_layers) -> None:
    with pytest.raises(ValueError, match=r"0\.\.4"):
        WhisperLayerStats(all_layers.encoder, [5])
    with pytest.raises(ValueError, match="pooled layers"):
        WhisperLayerStats(all_layers.encoder, [])
    with pytest.raises(ValueError, match="expected \\(80"):
        all_layers.stats(np.zeros((128, 200), np.float32))


def test_utterance_features_are_functionals_then_layers() -> None:
    config = DualEncoderConfig(semantic=SemanticEncoderConfig(pooled_layers=[2, 3]))
    assert config.utterance_size == 88 + 2 * 768
    functionals = np.arange(88, dtype=np.float32)
    layers = np.stack([np.full(768, 2.0), np.full(768, 3.0)]).astype(np.float32)
    vector = utterance_features(config, functionals, layers)
    assert vector.shape == (config.utterance_size,)
    assert np.array_equal(vector[:88], functionals) and (vector[88 : 88 + 768] == 2).all()
    assert (vector[-768:] == 3).all()
    with pytest.raises(ValueError, match=r"pooled layer states of shape None"):
        utterance_features(config, functionals, None)
    with pytest.raises(ValueError, match=r"\(1, 768\)"):
        utterance_features(config, functionals, layers[:1])
    with pytest.raises(ValueError, match="eGeMAPS functionals"):
        utterance_features(config, functionals[:10], layers)
    assert utterance_features(DualEncoderConfig(acoustic_functionals=0), None, None) is None
    # a config saved before the field reads none
    old = DualEncoderConfig().to_dict()
    del old["semantic"]["pooled_layers"]
    assert DualEncoderConfig.from_dict(old).utterance_size == 88


def test_feature_cache_completes_pooled_layers_and_composes_the_head_input(tmp_path) -> None:
    from perception.finetune.datasets import Clip
    from perception.finetune.features import ClipFeatures, FeatureCache

    config = DualEncoderConfig(semantic=SemanticEncoderConfig(hidden_size=4, pooled_layers=[1]))
    clip = Clip(tmp_path / "a.wav", "angry", "hi", "s1")
    clip.path.write_bytes(b"RIFF not really audio")
    calls = []

    class Extractor:
        signature = "test"

        def __init__(self, config):
            self.config = config

        def __call__(self, clip):
            return ClipFeatures(
                np.ones((5, 4), np.float32), np.ones((8, 10), np.float32), {}, "hi", np.ones(88)
            )

        def layers(self, clip, features):
            calls.append(clip)
            return np.stack([np.full(8, float(i)) for i in range(3)]).astype(np.float32)

    plain = FeatureCache(tmp_path / "cache", Extractor(DualEncoderConfig(semantic=SemanticEncoderConfig(4))))
    first = plain.get(clip)  # written by a config without pooled layers
    assert first.layers is None and first.head_input().shape == (88,)
    cache = FeatureCache(tmp_path / "cache", Extractor(config))
    assert cache.warm([clip], progress=False) == [clip] and len(calls) == 1  # warming completes the entry
    assert cache.warm([clip], progress=False) == [clip] and len(calls) == 1  # complete now: not read again
    got = cache.get(clip)  # read back, complete
    assert got.head_input().shape == (88 + 8,) and (got.head_input()[88:] == 1).all()
    assert cache.get(clip).layers.shape == (3, 8) and len(calls) == 1


def test_a_run_starts_from_another_runs_weights_with_a_wider_head(tiny_lm_dir) -> None:
    import torch

    from perception.audiollm import DualEncoderForEmotionReasoning, DualEncoderProcessor
    from perception.audiollm.checkpoint import load_matching_weights, save_trainable, trainable_state_dict
    from tests.audiollm.conftest import load_lm, make_tokenizer, tiny_config

    def build(config):
        DualEncoderProcessor(config, make_tokenizer())  # sets the placeholder's id
        return DualEncoderForEmotionReasoning(config, load_lm(tiny_lm_dir))

    torch.manual_seed(0)
    source = build(tiny_config(tiny_lm_dir, acoustic_functionals=6))
    folder = save_trainable(source, tiny_lm_dir.parent / "source-run")
    config = tiny_config(tiny_lm_dir, acoustic_functionals=6)
    config.semantic.pooled_layers = [1]
    target = build(config)
    fresh = load_matching_weights(target, folder)
    assert fresh and all(name.startswith("aux_head.") for name in fresh)  # only the wider head is new
    src, dst = source.state_dict(), target.state_dict()
    kept = [n for n in trainable_state_dict(target) if n not in fresh]
    assert any(n.startswith("paralinguistic_projector.") for n in kept) and "aux_head.5.weight" in kept
    assert all(torch.equal(src[n], dst[n]) for n in kept)
    assert src["aux_head.2.weight"].shape != dst["aux_head.2.weight"].shape  # reads the pooled layers too
    from safetensors.torch import save_file

    unrelated = tiny_lm_dir.parent / "unrelated-run"
    unrelated.mkdir(exist_ok=True)
    save_file({"something.else": torch.zeros(3)}, str(unrelated / "trainable.safetensors"))
    with pytest.raises(ValueError, match="no tensor"):
        load_matching_weights(target, unrelated)


def test_an_ensemble_of_aux_heads_trains_each_head_and_scores_their_mean(tiny_lm_dir) -> None:
    import torch

    from perception.audiollm import DualEncoderForEmotionReasoning, DualEncoderProcessor
    from perception.audiollm.aux_heads import AuxHeadEnsemble, aux_cross_entropy
    from tests.audiollm.conftest import load_lm, make_tokenizer, tiny_config

    torch.manual_seed(0)
    config = tiny_config(tiny_lm_dir, aux_heads=3)
    processor = DualEncoderProcessor(config, make_tokenizer())
    model = DualEncoderForEmotionReasoning(config, load_lm(tiny_lm_dir))
    assert isinstance(model.aux_head, AuxHeadEnsemble) and len(model.aux_head.heads) == 3
    rng = np.random.default_rng(0)
    examples = [
        processor.encode(
            "emotion",
            rng.standard_normal((20, 16)).astype(np.float32),
            rng.standard_normal((8, 40)).astype(np.float32),
            emotion=label,
        )
        for label in ("angry", "sad")
    ]
    batch = processor.collate(examples)
    labels = batch.pop("emotion_labels")
    model.train()
    out = model(**batch, emotion_labels=labels, aux_only=True)
    per_head = out.aux_logits  # (K, B, n) while training
    assert per_head.shape == (3, 2, 6)
    expected = torch.stack([torch.nn.functional.cross_entropy(per_head[k], labels) for k in range(3)]).mean()
    assert torch.allclose(out.loss, expected, atol=1e-6)
    out.loss.backward()
    assert all(
        h[-1].weight.grad is not None and h[-1].weight.grad.abs().sum() > 0 for h in model.aux_head.heads
    )
    model.eval()
    batch.pop("labels", None)
    seen = []
    model.aux_head.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    probs = model.label_scores(**batch)
    with torch.no_grad():
        mean = torch.stack([h(seen[0]).softmax(-1) for h in model.aux_head.heads]).mean(0)
    assert torch.allclose(probs, mean, atol=1e-5)  # the ensemble's distribution is its heads' mean
    assert probs.shape == (2, 6) and torch.allclose(probs.sum(-1), torch.ones(2))
    assert aux_cross_entropy(torch.zeros(2, 6), labels).item() == pytest.approx(np.log(6), abs=1e-5)
