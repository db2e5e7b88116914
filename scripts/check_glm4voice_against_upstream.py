"""Compare our GLM-4-Voice decoder modules with upstream's on the same weights (a developer check,
not a test: it needs a checkout of THUDM/GLM-4-Voice, which the project never imports).

    .venv/bin/python scripts/check_glm4voice_against_upstream.py --upstream /path/to/GLM-4-Voice \
        [--decoder /path/to/glm-4-voice-decoder]

Without ``--decoder`` it writes the tests' tiny random-init directory. It loads ``flow.pt`` /
``hift.pt`` into upstream's ``BlockConformerEncoder``, ``InterpolateRegulator``,
``ConvRNNF0Predictor`` and ``HiFTGenerator`` (their imports need only torch, numpy and scipy)
and into ours, and prints the largest output difference of each. HiFT is compared on the same
harmonic source (upstream draws its own at random). The flow-matching U-Net is not compared:
upstream's imports diffusers through Matcha-TTS. Last line: one JSON object.
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
    ap.add_argument("--decoder", type=Path, help="a glm-4-voice-decoder directory")
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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
