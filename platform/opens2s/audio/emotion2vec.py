"""emotion2vec speech emotion recognition from a checkpoint in FunASR's directory format.

A released emotion2vec directory (emotion2vec_plus_base/large, emotion2vec_base_finetuned) holds
``config.yaml`` (``model: Emotion2vec`` and its ``model_conf``), ``model.pt`` (the state dict) and
``tokens.txt`` (one label a line, e.g. ``生气/angry``). The network is data2vec 2.0's audio
encoder: a strided conv feature extractor over the 16 kHz wave, a projection to ``embed_dim``, a
convolutional relative position encoder, learned extra tokens, ALiBi attention biases, a prenet of
post-norm transformer blocks (``context_encoder``), ``depth`` more blocks and a linear ``proj``
head. Utterance-level recognition is FunASR's: layer-norm the wave, run the encoder without
masking, drop the extra tokens, mean-pool over time, ``proj``, softmax (labels starting with
``unuse`` get no probability).

Our modules carry the checkpoint's own parameter names, so ``model.pt`` loads strictly: a missing,
unexpected or mis-shaped tensor is an error naming it. Two training-only parts are the only names
set aside (``TRAINING_ONLY``). docs/speech.md lists the upstream sources of every fact used here.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from opens2s.audio.io import AudioError

SAMPLE_RATE = 16000
"""emotion2vec hears 16 kHz mono audio."""

TRAINING_ONLY = (
    "modality_encoders.AUDIO.decoder.",  # data2vec's target decoder: pre-training loss only
    "_ema",  # the EMA teacher of pre-training (FunASR's Emotion2vec sets ``ema = None``)
)
"""Name prefixes a checkpoint may hold that inference never uses; any other name must load."""


class Emotion2vecError(AudioError):
    """An emotion2vec directory that cannot be loaded; the message names what is wrong."""


@dataclass(frozen=True)
class Emotion2vecConfig:
    """The sizes and switches of ``model_conf`` that decide the inference network."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    norm_eps: float
    norm_affine: bool
    normalize: bool
    conv_layers: tuple[tuple[int, int, int], ...]
    """``feature_encoder_spec``: (channels, kernel, stride) of each feature-extractor conv."""
    extractor_mode: str
    conv_pos_width: int
    conv_pos_groups: int
    conv_pos_depth: int
    conv_pos_pre_ln: bool
    prenet_depth: int
    num_extra_tokens: int
    use_alibi: bool
    num_alibi_heads: int
    alibi_scale_per_head: bool
    alibi_scale_per_layer: bool
    model_depth: int

    @property
    def conv_pos_kernel(self) -> int:
        """Kernel of each relative-position conv: the width shared out over the depth, at least 3."""
        return max(3, self.conv_pos_width // self.conv_pos_depth)

    @classmethod
    def from_model_conf(cls, conf: Any, source: str) -> Emotion2vecConfig:
        """Read ``config.yaml``'s ``model_conf``; a missing or wrong field is an error naming it."""
        if not isinstance(conf, dict):
            raise Emotion2vecError(source, "config.yaml has no model_conf mapping")
        audio = conf.get("modalities", {})
        audio = audio.get("audio") if isinstance(audio, dict) else None
        if not isinstance(audio, dict):
            raise Emotion2vecError(source, "config.yaml model_conf has no modalities.audio mapping")

        def field(table: dict, prefix: str, name: str, kind: type, default: Any = None) -> Any:
            key = f"model_conf.{prefix}{name}"
            if name not in table or table[name] is None:
                if default is not None:
                    return default
                raise Emotion2vecError(source, f"config.yaml has no {key}")
            value = table[name]
            try:
                if kind is bool:
                    if not isinstance(value, bool):
                        raise ValueError
                    return value
                if kind is int:
                    if isinstance(value, bool) or float(value) != int(value):
                        raise ValueError
                    return int(value)
                if kind is float:  # OmegaConf reads 1e-05; plain YAML leaves it a string
                    return float(value)
                return kind(value)
            except (TypeError, ValueError):
                raise Emotion2vecError(
                    source, f"config.yaml {key} is {value!r}, expected a {kind.__name__}"
                ) from None

        def top(name: str, kind: type) -> Any:
            return field(conf, "", name, kind)

        def aud(name: str, kind: type, default: Any = None) -> Any:
            return field(audio, "modalities.audio.", name, kind, default)

        if top("layer_norm_first", bool):
            raise Emotion2vecError(
                source,
                "config.yaml model_conf.layer_norm_first is true: only post-norm "
                "emotion2vec models (false, as released) are supported",
            )
        use_alibi = aud("use_alibi_encoder", bool)
        if use_alibi and aud("learned_alibi", bool, False):
            raise Emotion2vecError(
                source,
                "config.yaml model_conf.modalities.audio.learned_alibi is true: "
                "not supported (released emotion2vec models use fixed ALiBi)",
            )
        per_layer = use_alibi and aud("learned_alibi_scale_per_layer", bool)
        mode = aud("extractor_mode", str)
        if mode not in ("layer_norm", "default"):
            raise Emotion2vecError(
                source,
                f"config.yaml model_conf.modalities.audio.extractor_mode is {mode!r}, "
                "expected layer_norm or default",
            )
        cfg = cls(
            embed_dim=top("embed_dim", int),
            depth=top("depth", int),
            num_heads=top("num_heads", int),
            mlp_ratio=top("mlp_ratio", float),
            norm_eps=top("norm_eps", float),
            norm_affine=top("norm_affine", bool),
            normalize=top("normalize", bool),
            conv_layers=parse_feature_encoder_spec(aud("feature_encoder_spec", str), source),
            extractor_mode=mode,
            conv_pos_width=aud("conv_pos_width", int),
            conv_pos_groups=aud("conv_pos_groups", int),
            conv_pos_depth=aud("conv_pos_depth", int),
            conv_pos_pre_ln=aud("conv_pos_pre_ln", bool),
            prenet_depth=aud("prenet_depth", int),
            num_extra_tokens=aud("num_extra_tokens", int),
            use_alibi=use_alibi,
            num_alibi_heads=aud("num_alibi_heads", int) if use_alibi else 0,
            alibi_scale_per_head=use_alibi and aud("learned_alibi_scale_per_head", bool),
            alibi_scale_per_layer=per_layer,
            model_depth=aud("model_depth", int) if per_layer else 0,
        )
        if cfg.embed_dim % cfg.num_heads:
            raise Emotion2vecError(
                source,
                f"config.yaml model_conf.embed_dim {cfg.embed_dim} is not a multiple of "
                f"num_heads {cfg.num_heads}",
            )
        if cfg.embed_dim % cfg.conv_pos_groups or cfg.conv_pos_depth < 1:
            raise Emotion2vecError(
                source,
                "config.yaml model_conf.modalities.audio.conv_pos_groups "
                f"{cfg.conv_pos_groups} does not divide embed_dim {cfg.embed_dim} "
                f"(or conv_pos_depth {cfg.conv_pos_depth} < 1)",
            )
        if use_alibi and not 0 < cfg.num_alibi_heads <= cfg.num_heads:
            raise Emotion2vecError(
                source,
                f"config.yaml model_conf.modalities.audio.num_alibi_heads "
                f"{cfg.num_alibi_heads} must be 1..num_heads ({cfg.num_heads})",
            )
        if per_layer and cfg.model_depth != cfg.depth:
            raise Emotion2vecError(
                source,
                f"config.yaml model_conf.modalities.audio.model_depth {cfg.model_depth} "
                f"differs from model_conf.depth {cfg.depth}",
            )
        return cfg


def parse_feature_encoder_spec(spec: str, source: str) -> tuple[tuple[int, int, int], ...]:
    """``'[(512, 10, 5)] + [(512, 3, 2)] * 4'`` as a tuple of (channels, kernel, stride).

    Upstream evaluates the string as Python; we accept only lists of int triples joined by ``+``
    and repeated by ``* n``, and evaluate nothing else."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Tuple | ast.List):
            items = [value(e) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(ast.dump(node))

    try:
        layers = value(ast.parse(spec, mode="eval").body)
        ok = isinstance(layers, list) and layers
        ok = ok and all(
            isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) and v > 0 for v in t)
            for t in layers
        )
        if not ok:
            raise ValueError(spec)
    except (SyntaxError, ValueError, TypeError):
        raise Emotion2vecError(
            source,
            f"config.yaml model_conf.modalities.audio.feature_encoder_spec {spec!r} is "
            "not a list of (channels, kernel, stride) int triples",
        ) from None
    return tuple(layers)


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's per-head slopes (Press et al. 2022): a geometric series from 2^(-8/n) for a power
    of two n; otherwise the nearest lower power's slopes plus every other slope of the next."""
    if math.log2(heads).is_integer():
        first = 2.0 ** (-(2.0 ** -(math.log2(heads) - 3)))
        return [first ** (i + 1) for i in range(heads)]
    lower = 2 ** math.floor(math.log2(heads))
    return alibi_slopes(lower) + alibi_slopes(2 * lower)[0::2][: heads - lower]


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection and an additive bias."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        if bias is not None:  # ALiBi may cover only the first heads
            scores = scores.float()
            scores[:, : bias.size(1)] += bias
        weights = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A post-norm transformer block (data2vec 2.0's ``AltBlock`` with ``layer_norm_first``
    false): attention and MLP residuals, each followed by its LayerNorm."""

    def __init__(self, cfg: Emotion2vecConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)
        self.attn = Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)
        self.mlp = MLP(d, int(d * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, bias))
        return self.norm2(x + self.mlp(x))


def _indexed(**children: nn.Module) -> nn.ModuleDict:
    """A ModuleDict keyed by the positions upstream's ``nn.Sequential`` gives these layers
    (``_2`` → ``"2"``), so parameter names match the checkpoint's."""
    return nn.ModuleDict({k.lstrip("_"): m for k, m in children.items()})


class AudioEncoder(nn.Module):
    """The audio front of the model (upstream's ``modality_encoders.AUDIO``): conv features,
    projection, relative positions, extra tokens, ALiBi scale and the prenet blocks.

    Submodules sit at the indices of upstream's ``nn.Sequential`` containers, whose other
    entries (transposes, dropout, GELU, LayerNorms without weights) hold no parameters."""

    def __init__(self, cfg: Emotion2vecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        convs = nn.ModuleList()
        c_in = 1
        for i, (c, k, s) in enumerate(cfg.conv_layers):
            conv = nn.Conv1d(c_in, c, k, stride=s, bias=False)
            if cfg.extractor_mode == "layer_norm":  # conv, dropout, (T, LayerNorm, T), GELU
                convs.append(_indexed(_0=conv, _2=_indexed(_1=nn.LayerNorm(c))))
            elif i == 0:  # "default": a GroupNorm with one group per channel, first layer only
                convs.append(_indexed(_0=conv, _2=nn.GroupNorm(c, c)))
            else:
                convs.append(_indexed(_0=conv))
            c_in = c
        self.local_encoder = nn.Module()
        self.local_encoder.conv_layers = convs
        # (T, LayerNorm, Linear)
        self.project_features = _indexed(_1=nn.LayerNorm(c_in), _2=nn.Linear(c_in, d))
        k = cfg.conv_pos_kernel
        pos = nn.ModuleDict(  # index 0 is a transpose; each layer: conv, pad, T, LN, T, GELU
            {
                str(i + 1): _indexed(
                    _0=nn.Conv1d(d, d, k, padding=k // 2, groups=cfg.conv_pos_groups)
                )
                for i in range(cfg.conv_pos_depth)
            }
        )
        self.relative_positional_encoder = (
            _indexed(_0=nn.LayerNorm(d), _1=pos) if cfg.conv_pos_pre_ln else pos
        )
        self.context_encoder = nn.Module()
        self.context_encoder.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.prenet_depth))
        self.context_encoder.norm = nn.LayerNorm(
            d, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine
        )
        if cfg.num_extra_tokens > 0:
            self.extra_tokens = nn.Parameter(torch.zeros(1, cfg.num_extra_tokens, d))
        if cfg.use_alibi:
            layers = cfg.prenet_depth + cfg.model_depth if cfg.alibi_scale_per_layer else 1
            heads = cfg.num_alibi_heads if cfg.alibi_scale_per_head else 1
            self.alibi_scale = nn.Parameter(torch.ones(layers, 1, heads, 1, 1))

    def conv_features(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) → (B, frames, channels) of the strided conv stack."""
        x = wave.unsqueeze(1)
        for layer in self.local_encoder.conv_layers:
            x = layer["0"](x)
            if "2" in layer:
                norm = layer["2"]
                if isinstance(norm, nn.GroupNorm):
                    x = norm(x)
                else:
                    x = norm["1"](x.transpose(1, 2)).transpose(1, 2)
            x = F.gelu(x)
        return x.transpose(1, 2)

    def relative_positions(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional position signal added to the projected features (B, T, D)."""
        pos = self.relative_positional_encoder
        if self.cfg.conv_pos_pre_ln:
            x, pos = pos["0"](x), pos["1"]
        y = x.transpose(1, 2)
        for i in range(self.cfg.conv_pos_depth):
            y = pos[str(i + 1)]["0"](y)
            if self.cfg.conv_pos_kernel % 2 == 0:  # "same" length for an even kernel
                y = y[:, :, :-1]
            y = F.layer_norm(y.transpose(1, 2), (y.size(1),)).transpose(1, 2)
            y = F.gelu(y)
        return y.transpose(1, 2)

    def alibi(self, frames: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The ALiBi bias (1, heads, T, T) over frames and extra tokens, already scaled when one
        scale serves every layer, and the per-layer scales (or None)."""
        if not self.cfg.use_alibi:
            return None, None
        slopes = torch.tensor(alibi_slopes(self.cfg.num_alibi_heads), dtype=torch.float32)
        pos = torch.arange(frames, dtype=torch.float32)
        bias = -(pos[None, :] - pos[:, None]).abs()[None] * slopes[:, None, None]
        bias = bias.unsqueeze(0).to(self.alibi_scale.device)
        scale = self.alibi_scale.clamp_min(0)
        if scale.size(0) == 1:
            bias, scale = bias * scale.squeeze(0), None
        n = self.cfg.num_extra_tokens  # extra tokens get no position bias
        return F.pad(bias, (n, 0, n, 0)), scale

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """Prenet output (B, extra + frames, D), the ALiBi bias and per-layer scales."""
        x = self.project_features["2"](self.project_features["1"](self.conv_features(wave)))
        x = x + self.relative_positions(x)
        bias, scale = self.alibi(x.size(1))
        if self.cfg.num_extra_tokens > 0:
            x = torch.cat([self.extra_tokens.expand(x.size(0), -1, -1), x], dim=1)
        x = self.context_encoder.norm(x)
        for i, block in enumerate(self.context_encoder.blocks):
            x = block(x, bias if scale is None else bias * scale[i])
        return x, bias, scale


class Emotion2vec(nn.Module):
    """emotion2vec's inference network with the checkpoint's parameter names, and its labels."""

    def __init__(self, cfg: Emotion2vecConfig, labels: list[str]) -> None:
        super().__init__()
        self.cfg = cfg
        self.labels = list(labels)
        self.modality_encoders = nn.ModuleDict({"AUDIO": AudioEncoder(cfg)})
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.proj = nn.Linear(cfg.embed_dim, len(labels))

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        """Frame features (B, frames, D) of 16 kHz waves (B, samples): FunASR's
        ``extract_features`` without masking, extra tokens removed."""
        if self.cfg.normalize:  # each wave to zero mean and unit variance
            wave = F.layer_norm(wave, wave.shape[-1:])
        x, bias, scale = self.modality_encoders["AUDIO"](wave)
        first = self.cfg.prenet_depth
        for i, block in enumerate(self.blocks):
            x = block(x, bias if scale is None else bias * scale[first + i])
        return x[:, self.cfg.num_extra_tokens :]

    @torch.no_grad()
    def utterance(self, wave16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pooled embedding (D,) and the head's logits (labels,) of one 16 kHz wave."""
        device = self.proj.weight.device
        wave = torch.as_tensor(np.asarray(wave16k, dtype=np.float32), device=device)[None]
        pooled = self.frames(wave).mean(dim=1)
        logits = self.proj(pooled)[0]
        return pooled[0].float().cpu().numpy(), logits.float().cpu().numpy()

    def recognize(self, wave16k: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Utterance-level emotion probabilities and their labels, as FunASR's inference gives
        them: labels starting with ``unuse`` take no probability and are left out."""
        _, logits = self.utterance(wave16k)
        keep = [i for i, label in enumerate(self.labels) if not label.startswith("unuse")]
        z = logits[keep].astype(np.float64)
        p = np.exp(z - z.max())
        return (p / p.sum()).astype(np.float32), [self.labels[i] for i in keep]


def read_labels(path: Path, source: str) -> list[str]:
    """``tokens.txt``: one label a line, trailing whitespace dropped (FunASR's token list)."""
    if not path.is_file():
        raise Emotion2vecError(source, f"no {path.name} (the labels of the proj head, one a line)")
    labels = [line.rstrip() for line in path.read_text(encoding="utf-8").splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise Emotion2vecError(source, f"{path.name} is empty")
    return labels


def checkpoint_state(path: Path, source: str) -> dict[str, torch.Tensor]:
    """The state dict in ``model.pt``: the file itself or its ``state_dict`` / ``model_state_dict``
    / ``model`` entry (as FunASR looks them up), ``module.`` prefixes removed."""
    if not path.is_file():
        raise Emotion2vecError(source, f"no {path.name} (the weights)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with more than tensors and containers, or a broken file
        raise Emotion2vecError(
            source, f"{path.name} cannot be read as tensors: {str(e).splitlines()[0][:200]}"
        ) from e
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise Emotion2vecError(source, f"{path.name} holds no state dict")
    state = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise Emotion2vecError(source, f"{path.name} entry {name!r} is not a tensor")
        state[name.removeprefix("module.")] = value
    return state


def load_state_strictly(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load every tensor of ``state`` into ``model``; refuse a missing, unexpected or mis-shaped
    one by name. Returns the training-only names that were set aside."""
    ours = model.state_dict()
    skipped = sorted(n for n in state if n.startswith(TRAINING_ONLY))
    given = {n: t for n, t in state.items() if not n.startswith(TRAINING_ONLY)}

    def listing(names: list[str]) -> str:
        more = f" and {len(names) - 8} more" if len(names) > 8 else ""
        return ", ".join(names[:8]) + more

    problems = []
    if missing := sorted(set(ours) - set(given)):
        problems.append(f"missing tensors: {listing(missing)}")
    if unexpected := sorted(set(given) - set(ours)):
        problems.append(f"unexpected tensors: {listing(unexpected)}")
    if shaped := [
        f"{n} {tuple(given[n].shape)} (config.yaml/tokens.txt give {tuple(ours[n].shape)})"
        for n in sorted(set(given) & set(ours))
        if given[n].shape != ours[n].shape
    ]:
        problems.append(f"mis-shaped tensors: {listing(shaped)}")
    if not_float := sorted(n for n in given if not given[n].is_floating_point()):
        problems.append(f"non-float tensors: {listing(not_float)}")
    if problems:
        raise Emotion2vecError(
            source, f"model.pt does not match config.yaml: {'; '.join(problems)}"
        )
    model.load_state_dict({n: t.float() for n, t in given.items()}, strict=True)
    return skipped


def is_emotion2vec_dir(path: Path) -> bool:
    """Whether ``path`` holds a FunASR ``config.yaml`` (the format's marker file)."""
    return (Path(path) / "config.yaml").is_file()


def load_emotion2vec(
    path: str | Path, device: str = "cpu", source: str | None = None
) -> Emotion2vec:
    """The emotion2vec model of a FunASR directory (``config.yaml`` with ``model: Emotion2vec``,
    ``model.pt``, ``tokens.txt``), loaded strictly, in eval mode on ``device``."""
    import yaml

    path = Path(path)
    source = source or f"emotion2vec model {path}"
    config_file = path / "config.yaml"
    if not config_file.is_file():
        raise Emotion2vecError(source, "no config.yaml (FunASR's model description)")
    try:
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise Emotion2vecError(source, f"config.yaml is not YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(config, dict) or config.get("model") != "Emotion2vec":
        found = config.get("model") if isinstance(config, dict) else None
        raise Emotion2vecError(source, f"config.yaml model is {found!r}, expected 'Emotion2vec'")
    cfg = Emotion2vecConfig.from_model_conf(config.get("model_conf"), source)
    labels = read_labels(path / "tokens.txt", source)
    state = checkpoint_state(path / "model.pt", source)
    model = Emotion2vec(cfg, labels)
    load_state_strictly(model, state, source)
    return model.to(device).eval()
