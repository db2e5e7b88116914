"""A tiny emotion2vec directory in FunASR's release layout, with random weights.

``config.yaml`` follows the released emotion2vec_plus configs (``model: Emotion2vec``, the full
``model_conf`` with ``modalities.audio`` and its pre-training ``decoder`` section) at tiny sizes;
``tokens.txt`` holds emotion2vec_plus's 9 labels; ``model.pt`` is ``{"model": state_dict}`` whose
names are written out here from upstream's module tree (FunASR ``funasr/models/emotion2vec``),
not taken from our model, so loading it checks our names. Like the released files it has no
decoder tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

LABELS = [
    "生气/angry",
    "厌恶/disgusted",
    "恐惧/fearful",
    "开心/happy",
    "中立/neutral",
    "其他/other",
    "难过/sad",
    "吃惊/surprised",
    "<unk>",
]
"""emotion2vec_plus's tokens.txt, in its order."""

EMBED, HEADS, DEPTH, PRENET, EXTRA, MLP_RATIO = 32, 2, 2, 2, 4, 2.0
CONV_SPEC = "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16,2,2)] + [(16,2,2)]"
CONVS = [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2
POS_WIDTH, POS_DEPTH, POS_GROUPS = 12, 2, 4  # kernel 12 // 2 = 6: even, so one frame is trimmed


def model_conf() -> dict:
    """The released ``model_conf`` layout at tiny sizes (training-only fields included)."""
    return {
        "loss_beta": 0.0,
        "loss_scale": None,
        "depth": DEPTH,
        "start_drop_path_rate": 0.0,
        "end_drop_path_rate": 0.0,
        "num_heads": HEADS,
        "norm_eps": "1e-05",  # as plain YAML reads the released "1e-05"
        "norm_affine": True,
        "encoder_dropout": 0.1,
        "post_mlp_drop": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "dropout_input": 0.0,
        "layerdrop": 0.05,
        "embed_dim": EMBED,
        "mlp_ratio": MLP_RATIO,
        "layer_norm_first": False,
        "average_top_k_layers": DEPTH,
        "end_of_block_targets": False,
        "clone_batch": 8,
        "ema_decay": 0.999,
        "ema_end_decay": 0.99999,
        "ema_anneal_end_step": 20000,
        "ema_encoder_only": False,
        "max_update": 100000,
        "extractor_mode": "layer_norm",
        "shared_decoder": None,
        "supported_modality": "AUDIO",
        "mae_init": False,
        "seed": 1,
        "skip_ema": False,
        "cls_loss": 1.0,
        "recon_loss": 0.0,
        "d2v_loss": 1.0,
        "decoder_group": False,
        "adversarial_training": False,
        "cls_type": "chunk",
        "normalize": True,
        "modalities": {
            "audio": {
                "type": "AUDIO",
                "prenet_depth": PRENET,
                "prenet_layerdrop": 0.05,
                "prenet_dropout": 0.1,
                "start_drop_path_rate": 0.0,
                "end_drop_path_rate": 0.0,
                "num_extra_tokens": EXTRA,
                "init_extra_token_zero": True,
                "mask_noise_std": 0.01,
                "mask_prob_min": None,
                "mask_prob": 0.5,
                "inverse_mask": False,
                "mask_prob_adjust": 0.05,
                "keep_masked_pct": 0.0,
                "mask_length": 5,
                "add_masks": False,
                "remove_masks": False,
                "mask_dropout": 0.0,
                "encoder_zero_mask": True,
                "mask_channel_prob": 0.0,
                "mask_channel_length": 64,
                "ema_local_encoder": False,
                "local_grad_mult": 1.0,
                "use_alibi_encoder": True,
                "alibi_scale": 1.0,
                "learned_alibi": False,
                "alibi_max_pos": None,
                "learned_alibi_scale": True,
                "learned_alibi_scale_per_head": True,
                "learned_alibi_scale_per_layer": False,
                "num_alibi_heads": HEADS,
                "model_depth": DEPTH,
                "decoder": {
                    "decoder_dim": 16,
                    "decoder_groups": 4,
                    "decoder_kernel": 3,
                    "decoder_layers": 2,
                    "input_dropout": 0.1,
                    "add_positions_masked": False,
                    "add_positions_all": False,
                    "decoder_residual": True,
                    "projection_layers": 1,
                    "projection_ratio": 2.0,
                },
                "extractor_mode": "layer_norm",
                "feature_encoder_spec": CONV_SPEC,
                "conv_pos_width": POS_WIDTH,
                "conv_pos_groups": POS_GROUPS,
                "conv_pos_depth": POS_DEPTH,
                "conv_pos_pre_ln": False,
            }
        },
    }


def config() -> dict:
    """config.yaml: the model, its conf, and FunASR's tokenizer entry for tokens.txt."""
    return {
        "model": "Emotion2vec",
        "model_conf": model_conf(),
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
    }


def configuration() -> dict:
    """configuration.json: FunASR resolves the other files through its ``file_path_metas``."""
    return {
        "framework": "pytorch",
        "task": "emotion-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "model_name_in_hub": {"ms": "", "hf": ""},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"token_list": "tokens.txt"},
        },
    }


def block_shapes(prefix: str) -> dict[str, tuple[int, ...]]:
    hidden = int(EMBED * MLP_RATIO)
    return {
        f"{prefix}.norm1.weight": (EMBED,),
        f"{prefix}.norm1.bias": (EMBED,),
        f"{prefix}.attn.qkv.weight": (3 * EMBED, EMBED),
        f"{prefix}.attn.qkv.bias": (3 * EMBED,),
        f"{prefix}.attn.proj.weight": (EMBED, EMBED),
        f"{prefix}.attn.proj.bias": (EMBED,),
        f"{prefix}.norm2.weight": (EMBED,),
        f"{prefix}.norm2.bias": (EMBED,),
        f"{prefix}.mlp.fc1.weight": (hidden, EMBED),
        f"{prefix}.mlp.fc1.bias": (hidden,),
        f"{prefix}.mlp.fc2.weight": (EMBED, hidden),
        f"{prefix}.mlp.fc2.bias": (EMBED,),
    }


def state_shapes(n_labels: int = len(LABELS)) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a released emotion2vec model.pt with its shape at the tiny sizes."""
    audio = "modality_encoders.AUDIO"
    shapes: dict[str, tuple[int, ...]] = {
        f"{audio}.extra_tokens": (1, EXTRA, EMBED),
        f"{audio}.alibi_scale": (1, 1, HEADS, 1, 1),
    }
    c_in = 1
    for i, (c, k, _) in enumerate(CONVS):  # conv, dropout, (T, LayerNorm, T), GELU
        shapes[f"{audio}.local_encoder.conv_layers.{i}.0.weight"] = (c, c_in, k)
        shapes[f"{audio}.local_encoder.conv_layers.{i}.2.1.weight"] = (c,)
        shapes[f"{audio}.local_encoder.conv_layers.{i}.2.1.bias"] = (c,)
        c_in = c
    shapes[f"{audio}.project_features.1.weight"] = (c_in,)
    shapes[f"{audio}.project_features.1.bias"] = (c_in,)
    shapes[f"{audio}.project_features.2.weight"] = (EMBED, c_in)
    shapes[f"{audio}.project_features.2.bias"] = (EMBED,)
    k = max(3, POS_WIDTH // POS_DEPTH)
    for i in range(1, POS_DEPTH + 1):
        shapes[f"{audio}.relative_positional_encoder.{i}.0.weight"] = (
            EMBED,
            EMBED // POS_GROUPS,
            k,
        )
        shapes[f"{audio}.relative_positional_encoder.{i}.0.bias"] = (EMBED,)
    for i in range(PRENET):
        shapes.update(block_shapes(f"{audio}.context_encoder.blocks.{i}"))
    shapes[f"{audio}.context_encoder.norm.weight"] = (EMBED,)
    shapes[f"{audio}.context_encoder.norm.bias"] = (EMBED,)
    for i in range(DEPTH):
        shapes.update(block_shapes(f"blocks.{i}"))
    shapes["proj.weight"] = (n_labels, EMBED)
    shapes["proj.bias"] = (n_labels,)
    return shapes


def random_state(seed: int = 0, n_labels: int = len(LABELS)) -> dict[str, torch.Tensor]:
    """Random tensors for every name: norms near 1, ALiBi scales positive, the rest small."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in state_shapes(n_labels).items():
        x = torch.randn(shape, generator=g)
        if ".norm" in name or ".2.1." in name or "features.1." in name:
            x = 1.0 + 0.1 * x if name.endswith("weight") else 0.1 * x
        elif name.endswith("alibi_scale"):
            x = 0.5 + x.abs()
        elif name.endswith("extra_tokens"):
            pass
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else EMBED
            x = x / fan_in**0.5 if len(shape) > 1 else 0.1 * x
        state[name] = x.float().contiguous()
    return state


def write_tiny_emotion2vec(
    out: Path, seed: int = 0, favour: str | None = None, labels: list[str] | None = None
) -> Path:
    """Write config.yaml, model.pt and tokens.txt of a random tiny emotion2vec into ``out``.

    ``favour`` (a label) raises that label's head bias so the model hears every wave as it."""
    labels = list(labels or LABELS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = random_state(seed, len(labels))
    if favour is not None:
        state["proj.bias"][labels.index(favour)] += 50.0
    (out / "config.yaml").write_text(
        yaml.safe_dump(config(), allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    (out / "tokens.txt").write_text("".join(f"{t}\n" for t in labels), encoding="utf-8")
    torch.save({"model": state}, out / "model.pt")
    (out / "configuration.json").write_text(json.dumps(configuration()), encoding="utf-8")
    return out
