"""Compare our GLM-4-Voice decoder modules with upstream's on the same weights (a developer check,
not a test: it needs checkouts of THUDM/GLM-4-Voice and of its Matcha-TTS submodule, which the
project never imports).

    .venv/bin/python scripts/check_glm4voice_against_upstream.py --upstream /path/to/GLM-4-Voice \
        [--matcha /path/to/Matcha-TTS] [--decoder /path/to/glm-4-voice-decoder]

Without ``--decoder`` it writes the tests' tiny random-init directory. It loads ``flow.pt`` /
``hift.pt`` strictly into upstream's modules and into ours and prints the largest output
difference of each: the encoder, length regulator, F0 predictor and HiFT (on the same harmonic
source: upstream draws its own at random) need only torch, numpy and scipy. With ``--matcha``
the whole flow (``MaskedDiffWithXvec.inference`` with ``ConditionalCFM`` and the Matcha U-Net,
with and without a prompt, from upstream's seed-42 noise) is compared too; the few third-party
names those files import (diffusers' ``Attention`` and ``GELU``, omegaconf's ``DictConfig``,
Matcha's logger) are replaced by stand-ins written to a temp dir, so that part also checks our
reading of diffusers. With ``--tokenizer`` (a glm-4-voice-tokenizer directory, or ``tiny`` for the
tests' one) the units of three noise waves are compared with upstream's ``WhisperVQEncoder``
loaded as its ``load_quantize_encoder`` does (eager attention, the installed transformers).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", type=Path, required=True, help="a THUDM/GLM-4-Voice checkout")
    ap.add_argument("--matcha", type=Path, help="a Matcha-TTS checkout (GLM-4-Voice's submodule)")
    ap.add_argument("--decoder", type=Path, help="a glm-4-voice-decoder directory")
    ap.add_argument("--tokenizer", help="a glm-4-voice-tokenizer directory, or 'tiny'")
    args = ap.parse_args()
    sys.path.insert(0, str(args.upstream))
    sys.path.insert(0, str(ROOT / "tests"))
    from cosyvoice.flow.length_regulator import InterpolateRegulator
    from cosyvoice.hifigan.f0_predictor import ConvRNNF0Predictor
    from cosyvoice.hifigan.generator import HiFTGenerator
    from cosyvoice.transformer.encoder import BlockConformerEncoder
    from opens2s.audio.glm4voice_decoder import GLM4VoiceDecoder

    path = args.decoder
    if path is None:
        from glm4voice_tiny import write_tiny_decoder

        path = write_tiny_decoder(Path(tempfile.mkdtemp(prefix="glm4voice-check-")))
    ours = GLM4VoiceDecoder(path)
    fc, hc = ours.flow_cfg, ours.hift_cfg
    flow = torch.load(path / "flow.pt", map_location="cpu", weights_only=True)
    hift = torch.load(path / "hift.pt", map_location="cpu", weights_only=True)

    def sub(state: dict, prefix: str) -> dict:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    torch.manual_seed(0)
    out = {}
    enc = BlockConformerEncoder(
        input_size=fc.input_size,
        output_size=fc.encoder_output_size,
        attention_heads=fc.attention_heads,
        linear_units=fc.linear_units,
        num_blocks=fc.num_blocks,
        dropout_rate=0.0,
        positional_dropout_rate=0.0,
        attention_dropout_rate=0.0,
        input_layer="linear",
        pos_enc_layer_type="rel_pos_espnet",
        selfattention_layer_type="block_rel_selfattn",
        block_size=fc.block_size,
        use_cnn_module=False,
        macaron_style=False,
    ).eval()
    enc.load_state_dict(sub(flow, "encoder."), strict=True)
    x = torch.randn(1, 37, fc.input_size)
    with torch.no_grad():
        out["encoder"] = (enc(x, torch.tensor([37]))[0] - ours.flow.encoder(x)).abs().max().item()
    reg = InterpolateRegulator(fc.regulator_channels, list(fc.sampling_ratios)).eval()
    reg.load_state_dict(sub(flow, "length_regulator."), strict=True)
    h = torch.randn(1, 37, fc.regulator_channels)
    with torch.no_grad():
        ref = reg(h, torch.tensor([255]))[0]
        out["length_regulator"] = (ref - ours.flow.length_regulator(h, 255)).abs().max().item()
    up = HiFTGenerator(
        in_channels=hc.in_channels,
        base_channels=hc.base_channels,
        nb_harmonics=hc.nb_harmonics,
        sampling_rate=hc.sampling_rate,
        upsample_rates=list(hc.upsample_rates),
        upsample_kernel_sizes=list(hc.upsample_kernel_sizes),
        istft_params={"n_fft": hc.n_fft, "hop_len": hc.hop_len},
        f0_predictor=ConvRNNF0Predictor(1, hc.in_channels, hc.f0_cond_channels),
    ).eval()
    up.load_state_dict(hift, strict=True)
    mel = torch.randn(1, hc.in_channels, 20) - 4
    with torch.no_grad():
        out["f0_predictor"] = (
            (up.f0_predictor(mel) - ours.hift.f0_predictor(mel)).abs().max().item()
        )
        wave, source, _ = ours.hift.inference(mel)
        up._f02source = lambda _f0: source
        out["hift_same_source"] = (up(mel)[0] - wave).abs().max().item()
        out["hift_peak"] = wave.abs().max().item()
    if args.matcha is not None:
        out |= _check_flow(args.matcha, ours, flow)
    if args.tokenizer is not None:
        out |= _check_tokenizer(args.tokenizer)
    print(json.dumps(out))


def _check_tokenizer(where: str) -> dict:
    """Units of upstream's WhisperVQEncoder vs ours on three noise waves of different lengths."""
    import numpy as np
    from opens2s.audio.glm4voice_tokenizer import GLM4VoiceUnits
    from safetensors import safe_open
    from speech_tokenizer.configuration_whisper import WhisperVQConfig
    from speech_tokenizer.modeling_whisper import WhisperVQEncoder
    from transformers import WhisperFeatureExtractor

    if where == "tiny":
        from glm4voice_tiny import write_tiny_tokenizer

        where = str(write_tiny_tokenizer(Path(tempfile.mkdtemp(prefix="glm4voice-tok-"))))
    config = WhisperVQConfig.from_pretrained(where)
    config.quantize_encoder_only = True
    config._attn_implementation = "eager"
    model = WhisperVQEncoder(config)
    state = {}
    for path in sorted(Path(where).glob("model*.safetensors")):  # load_quantize_encoder's rules
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                if not key.startswith("model.encoder."):
                    continue
                name = key[len("model.encoder.") :]
                if name.startswith("layer_norm"):
                    continue
                if (
                    name.startswith("layers")
                    and int(name.split(".")[1]) >= config.quantize_position
                ):
                    continue
                state[name] = f.get_tensor(key)
    model.load_state_dict(state, strict=True)
    model.eval()
    features = WhisperFeatureExtractor.from_pretrained(where)
    rng = np.random.default_rng(0)
    waves = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (16000, 37000, 5000)]
    pool = config.pooling_kernel_size or 1
    feats = features(
        waves,
        sampling_rate=16000,
        return_attention_mask=True,
        return_tensors="pt",
        padding="longest",
        pad_to_multiple_of=2 * pool * features.hop_length,
    )
    with torch.no_grad():
        ids = model(**feats).quantized_token_ids
    valid = feats.attention_mask[:, ::2][:, ::pool].bool()
    ref = [ids[i][valid[i]].tolist() for i in range(len(waves))]
    mine = [u.tolist() for u in GLM4VoiceUnits(where).encode_batch([(w, 16000) for w in waves])]
    same = sum(a == b for r, m in zip(ref, mine, strict=True) for a, b in zip(r, m, strict=True))
    return {
        "tokenizer_units_equal": same,
        "tokenizer_units": sum(len(r) for r in ref),
        "tokenizer_lengths_equal": [len(r) for r in ref] == [len(m) for m in mine],
    }


STANDINS = {
    "conformer/__init__.py": "import torch\nclass ConformerBlock(torch.nn.Module):\n    pass\n",
    "omegaconf/__init__.py": (
        "class DictConfig(dict):\n"
        "    def __init__(self, content=None, **kw):\n"
        "        super().__init__(content or {}, **kw)\n"
        "    def __getattr__(self, k):\n"
        "        return self[k]\n"
    ),
    "diffusers/__init__.py": "",
    "diffusers/models/__init__.py": "",
    "diffusers/utils/__init__.py": "",
    "diffusers/utils/torch_utils.py": "def maybe_allow_in_graph(cls):\n    return cls\n",
    "diffusers/models/lora.py": "import torch\nLoRACompatibleLinear = torch.nn.Linear\n",
    "diffusers/models/activations.py": (
        "import torch\n"
        "def get_activation(name):\n"
        "    return {'silu': torch.nn.SiLU(), 'mish': torch.nn.Mish(), 'gelu': torch.nn.GELU()}[name]\n"
    ),
    # diffusers' GELU: a Linear named proj, then exact gelu
    "diffusers/models/attention.py": (
        "import torch\nimport torch.nn.functional as F\n"
        "class GELU(torch.nn.Module):\n"
        "    def __init__(self, dim_in, dim_out, approximate='none', bias=True):\n"
        "        super().__init__()\n"
        "        self.proj = torch.nn.Linear(dim_in, dim_out, bias=bias)\n"
        "        self.approximate = approximate\n"
        "    def forward(self, x):\n"
        "        return F.gelu(self.proj(x), approximate=self.approximate)\n"
        "GEGLU = ApproximateGELU = AdaLayerNorm = AdaLayerNormZero = None\n"
    ),
    # diffusers' Attention on its SDPA path: q/k/v without bias, to_out = [Linear, Dropout], the
    # (B, T, T) mask repeated per head and added to the scores
    "diffusers/models/attention_processor.py": (
        "import torch\nimport torch.nn.functional as F\n"
        "class Attention(torch.nn.Module):\n"
        "    def __init__(self, query_dim, cross_attention_dim=None, heads=8, dim_head=64,\n"
        "                 dropout=0.0, bias=False, upcast_attention=False, out_bias=True):\n"
        "        super().__init__()\n"
        "        inner, ctx = heads * dim_head, cross_attention_dim or query_dim\n"
        "        self.heads = heads\n"
        "        self.to_q = torch.nn.Linear(query_dim, inner, bias=bias)\n"
        "        self.to_k = torch.nn.Linear(ctx, inner, bias=bias)\n"
        "        self.to_v = torch.nn.Linear(ctx, inner, bias=bias)\n"
        "        self.to_out = torch.nn.ModuleList(\n"
        "            [torch.nn.Linear(inner, query_dim, bias=out_bias), torch.nn.Dropout(dropout)])\n"
        "    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):\n"
        "        b, t, _ = hidden_states.shape\n"
        "        c = hidden_states if encoder_hidden_states is None else encoder_hidden_states\n"
        "        h = self.heads\n"
        "        q = self.to_q(hidden_states).view(b, t, h, -1).transpose(1, 2)\n"
        "        k = self.to_k(c).view(b, c.shape[1], h, -1).transpose(1, 2)\n"
        "        v = self.to_v(c).view(b, c.shape[1], h, -1).transpose(1, 2)\n"
        "        m = None\n"
        "        if attention_mask is not None:\n"
        "            m = attention_mask.repeat_interleave(h, 0).view(b, h, -1, attention_mask.shape[-1])\n"
        "        o = F.scaled_dot_product_attention(q, k, v, attn_mask=m)\n"
        "        return self.to_out[1](self.to_out[0](o.transpose(1, 2).reshape(b, t, -1)))\n"
    ),
}


def _check_flow(matcha: Path, ours, flow: dict) -> dict:
    """Upstream's whole flow vs ours, from upstream's noise, without and with a prompt."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="glm4voice-standins-"))
    for rel, text in STANDINS.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    # Matcha's utils package imports hydra and lightning; only its logger is needed
    shutil.copytree(matcha / "matcha", tmp / "matcha")
    (tmp / "matcha/utils/__init__.py").write_text("")
    (tmp / "matcha/utils/pylogger.py").write_text(
        "import logging\ndef get_pylogger(name=__name__):\n    return logging.getLogger(name)\n"
    )
    sys.path.insert(0, str(tmp))
    from cosyvoice.flow.decoder import ConditionalDecoder
    from cosyvoice.flow.flow import MaskedDiffWithXvec
    from cosyvoice.flow.flow_matching import ConditionalCFM
    from cosyvoice.flow.length_regulator import InterpolateRegulator
    from cosyvoice.transformer.encoder import BlockConformerEncoder
    from omegaconf import DictConfig

    fc = ours.flow_cfg
    cfm_params = {"sigma_min": 1e-6, "solver": "euler", "t_scheduler": fc.t_scheduler}
    cfm_params |= {"training_cfg_rate": 0.2, "inference_cfg_rate": fc.inference_cfg_rate}
    estimator = ConditionalDecoder(
        in_channels=4 * fc.output_size,
        out_channels=fc.output_size,
        channels=list(fc.channels),
        dropout=0,
        attention_head_dim=fc.attention_head_dim,
        n_blocks=fc.n_blocks,
        num_mid_blocks=fc.num_mid_blocks,
        num_heads=fc.num_heads,
        act_fn="gelu",
    )
    up = MaskedDiffWithXvec(
        input_size=fc.input_size,
        output_size=fc.output_size,
        spk_embed_dim=fc.spk_embed_dim,
        vocab_size=fc.vocab_size,
        input_frame_rate=fc.input_frame_rate,
        encoder=BlockConformerEncoder(
            input_size=fc.input_size,
            output_size=fc.encoder_output_size,
            attention_heads=fc.attention_heads,
            linear_units=fc.linear_units,
            num_blocks=fc.num_blocks,
            input_layer="linear",
            pos_enc_layer_type="rel_pos_espnet",
            selfattention_layer_type="block_rel_selfattn",
            block_size=fc.block_size,
            use_cnn_module=False,
            macaron_style=False,
        ),
        length_regulator=InterpolateRegulator(fc.regulator_channels, list(fc.sampling_ratios)),
        decoder=ConditionalCFM(
            in_channels=3 * fc.output_size,
            n_spks=1,
            spk_emb_dim=fc.output_size,
            cfm_params=DictConfig(cfm_params),
            estimator=estimator,
        ),
    ).eval()
    up.load_state_dict(flow, strict=True)

    def upstream_noise(frames: int) -> torch.Tensor:
        torch.manual_seed(42)  # ConditionalCFM.forward's draw
        return torch.randn(1, fc.output_size, frames)

    ours.flow.start_noise = upstream_noise
    gen = torch.Generator().manual_seed(1)
    units = torch.randint(0, fc.vocab_size, (1, 27), generator=gen)
    cases = {
        "flow_no_prompt": (torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, fc.output_size)),
        "flow_with_prompt": (
            torch.randint(0, fc.vocab_size, (1, 20), generator=gen),
            torch.randn(1, 137, fc.output_size) - 4,
        ),
    }
    out = {}
    with torch.no_grad():
        for name, (pu, pm) in cases.items():
            ref = up.inference(
                units,
                torch.tensor([units.shape[1]]),
                pu,
                torch.tensor([pu.shape[1]]),
                pm,
                torch.tensor([pm.shape[1]]),
                torch.zeros(1, fc.spk_embed_dim),
            )
            mine = ours.flow.inference(units, pu, pm.transpose(1, 2))
            out[name] = (ref - mine).abs().max().item()
    out["flow_peak"] = ref.abs().max().item()
    return out


if __name__ == "__main__":
    main()
