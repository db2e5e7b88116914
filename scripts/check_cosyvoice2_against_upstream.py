"""Compare our CosyVoice2 flow and HiFT with upstream's modules on the same weights (a developer
check, not a test: it needs source trees of FunAudioLLM/CosyVoice and of its Matcha-TTS
submodule, which the project never imports, plus diffusers, omegaconf, conformer and einops).

    python scripts/check_cosyvoice2_against_upstream.py --upstream /path/to/CosyVoice \
        --matcha /path/to/Matcha-TTS [--model DIR] [--released-sizes]

Without ``--model`` it writes the tests' tiny random-init ``flow.pt`` / ``hift.pt`` (and a
cosyvoice2.yaml of their sections); ``--released-sizes`` writes random weights at the sizes of upstream's
examples/libritts/cosyvoice2/conf/cosyvoice2.yaml (the released CosyVoice2-0.5B's) instead. ``--model`` takes a
directory with cosyvoice2.yaml, flow.pt and hift.pt. Each state dict is loaded with
``strict=True`` into upstream's classes and into ours, and the largest absolute difference of
each output is printed: the encoder, the whole flow inference (offline, ``finalize=True``, from
upstream's own fixed noise table) without and with a prompt, the F0 predictor, the harmonic
source (with the additive noise set to zero on both sides: upstream draws it at random), HiFT
on the same source, and HiFT end to end without noise.

Upstream's ``UpsampleConformerEncoder`` builds its look-ahead and upsampling convs at 512
channels whatever the config says; for weights of another width (the tiny ones) those two layers
are rebuilt from upstream's own classes at the config's width before loading. The few imports
that have nothing to do with these modules are replaced by stand-ins: ``cosyvoice.utils.onnx``
(onnxruntime / torchaudio speech tokenizer for training), ``cosyvoice.utils.class_utils`` (its
tables, rebuilt from the upstream modules they name, without the LLM and CLI imports) and
Matcha's ``utils`` package (hydra / lightning; only its logger is used). Last line: one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _standins() -> None:
    """Stand-in modules for imports unrelated to the flow and HiFT."""
    import logging

    onnx = types.ModuleType("cosyvoice.utils.onnx")
    onnx.SpeechTokenExtractor, onnx.online_feature, onnx.onnx_path = None, False, ""
    sys.modules["cosyvoice.utils.onnx"] = onnx

    from cosyvoice.transformer import attention, embedding, subsampling

    classes = types.ModuleType("cosyvoice.utils.class_utils")
    classes.COSYVOICE_ACTIVATION_CLASSES = {"swish": torch.nn.SiLU, "gelu": torch.nn.GELU}
    classes.COSYVOICE_SUBSAMPLE_CLASSES = {"linear": subsampling.LinearNoSubsampling}
    classes.COSYVOICE_EMB_CLASSES = {"rel_pos_espnet": embedding.EspnetRelPositionalEncoding}
    classes.COSYVOICE_ATTENTION_CLASSES = {
        "selfattn": attention.MultiHeadedAttention,
        "rel_selfattn": attention.RelPositionMultiHeadedAttention,
    }
    sys.modules["cosyvoice.utils.class_utils"] = classes

    utils = types.ModuleType("matcha.utils")
    utils.__path__ = []
    pylogger = types.ModuleType("matcha.utils.pylogger")
    pylogger.get_pylogger = lambda name=__name__: logging.getLogger(name)
    sys.modules["matcha.utils"], sys.modules["matcha.utils.pylogger"] = utils, pylogger


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model is not None:
        return args.model
    sys.path.insert(0, str(ROOT / "tests"))
    from cosyvoice2_tiny_flow import TINY_FLOW_HEADER, tiny_flow_yaml_sections, write_tiny_flow_hift

    d = Path(tempfile.mkdtemp(prefix="cosyvoice2-check-"))
    if not args.released_sizes:
        (d / "cosyvoice2.yaml").write_text(TINY_FLOW_HEADER + "\n" + tiny_flow_yaml_sections())
        write_tiny_flow_hift(d, seed=0)
        return d
    from opens2s.audio.cosyvoice2_flow import (
        CausalMaskedDiffWithXvec,
        causal_flow_config,
        cosyvoice2_hift_config,
    )
    from opens2s.audio.glm4voice_decoder import read_config
    from opens2s.audio.glm4voice_hift import HiFTGenerator

    released = args.upstream / "examples/libritts/cosyvoice2/conf/cosyvoice2.yaml"
    (d / "cosyvoice2.yaml").write_text(released.read_text())
    cfg = read_config(d / "cosyvoice2.yaml")
    torch.manual_seed(0)
    flow = CausalMaskedDiffWithXvec(causal_flow_config(cfg))
    hift = HiFTGenerator(cosyvoice2_hift_config(cfg))
    with torch.no_grad():
        flow.decoder.estimator.final_proj.bias.fill_(-4.0)
        hift.f0_predictor.classifier.bias.fill_(150.0)
    torch.save(flow.state_dict(), d / "flow.pt")
    torch.save(hift.state_dict(), d / "hift.pt")
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", type=Path, required=True, help="a FunAudioLLM/CosyVoice tree")
    ap.add_argument("--matcha", type=Path, required=True, help="its Matcha-TTS submodule's tree")
    ap.add_argument("--model", type=Path, help="a directory with cosyvoice2.yaml, flow.pt, hift.pt")
    ap.add_argument("--released-sizes", action="store_true", help="random flow at released sizes")
    args = ap.parse_args()
    torch.set_num_threads(2)
    sys.path[:0] = [str(args.upstream), str(args.matcha)]
    _standins()

    from opens2s.audio.cosyvoice2_flow import (
        CausalMaskedDiffWithXvec,
        causal_flow_config,
        cosyvoice2_hift_config,
    )
    from opens2s.audio.glm4voice_decoder import load_strict, read_config
    from opens2s.audio.glm4voice_hift import HiFTGenerator

    d = _model_dir(args)
    cfg = read_config(d / "cosyvoice2.yaml")
    fc, hc = causal_flow_config(cfg), cosyvoice2_hift_config(cfg)
    flow = CausalMaskedDiffWithXvec(fc)
    load_strict(flow, d / "flow.pt")
    hift = HiFTGenerator(hc)
    load_strict(hift, d / "hift.pt")
    flow.eval(), hift.eval()
    flow_sd = torch.load(d / "flow.pt", map_location="cpu", weights_only=True)
    hift_sd = torch.load(d / "hift.pt", map_location="cpu", weights_only=True)

    out: dict = {"model": str(d)}
    out |= _check_flow(fc, flow, flow_sd)
    out |= _check_hift(hc, hift, hift_sd)
    print(json.dumps(out))


def _upstream_flow(fc):
    from cosyvoice.flow.decoder import CausalConditionalDecoder
    from cosyvoice.flow.flow import CausalMaskedDiffWithXvec
    from cosyvoice.flow.flow_matching import CausalConditionalCFM
    from cosyvoice.transformer.upsample_encoder import (
        PreLookaheadLayer,
        Upsample1D,
        UpsampleConformerEncoder,
    )
    from omegaconf import DictConfig

    d = fc.encoder_output_size
    encoder = UpsampleConformerEncoder(
        input_size=fc.input_size,
        output_size=d,
        attention_heads=fc.attention_heads,
        linear_units=fc.linear_units,
        num_blocks=fc.num_blocks,
        dropout_rate=0.1,
        positional_dropout_rate=0.1,
        attention_dropout_rate=0.1,
        normalize_before=True,
        input_layer="linear",
        pos_enc_layer_type="rel_pos_espnet",
        selfattention_layer_type="rel_selfattn",
        use_cnn_module=False,
        macaron_style=False,
        static_chunk_size=fc.static_chunk_size,
    )
    rebuilt = d != 512
    if rebuilt:  # upstream hard-codes 512 channels for these two layers
        encoder.pre_lookahead_layer = PreLookaheadLayer(d, d, fc.pre_lookahead_len)
        encoder.up_layer = Upsample1D(d, d, stride=fc.token_mel_ratio)
    cfm_params = {"sigma_min": 1e-6, "solver": "euler", "t_scheduler": fc.t_scheduler}
    cfm_params |= {"training_cfg_rate": 0.2, "inference_cfg_rate": fc.inference_cfg_rate}
    cfm_params |= {"reg_loss_type": "l1"}
    estimator = CausalConditionalDecoder(
        in_channels=fc.estimator_in_channels,
        out_channels=fc.output_size,
        channels=list(fc.channels),
        dropout=0.0,
        attention_head_dim=fc.attention_head_dim,
        n_blocks=fc.n_blocks,
        num_mid_blocks=fc.num_mid_blocks,
        num_heads=fc.num_heads,
        act_fn="gelu",
        static_chunk_size=fc.decoder_static_chunk_size,
        num_decoding_left_chunks=fc.num_decoding_left_chunks,
    )
    decoder = CausalConditionalCFM(
        in_channels=fc.cfm_in_channels,
        n_spks=1,
        spk_emb_dim=fc.output_size,
        cfm_params=DictConfig(cfm_params),
        estimator=estimator,
    )
    up = CausalMaskedDiffWithXvec(
        input_size=fc.input_size,
        output_size=fc.output_size,
        spk_embed_dim=fc.spk_embed_dim,
        output_type="mel",
        vocab_size=fc.vocab_size,
        input_frame_rate=fc.input_frame_rate,
        only_mask_loss=True,
        token_mel_ratio=fc.token_mel_ratio,
        pre_lookahead_len=fc.pre_lookahead_len,
        encoder=encoder,
        decoder=decoder,
    )
    return up.eval(), rebuilt


def _check_flow(fc, ours, state: dict) -> dict:
    up, rebuilt = _upstream_flow(fc)
    up.load_state_dict(state, strict=True)
    out = {"encoder_convs_rebuilt_at_config_width": rebuilt}
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 37, fc.input_size, generator=gen)
    with torch.no_grad():
        ref, _ = up.encoder(x, torch.tensor([37]), streaming=False)
        out["encoder"] = (ref - ours.encoder(x)).abs().max().item()
    out["start_noise"] = (up.decoder.rand_noise - ours.start_noise(15000)).abs().max().item()
    tokens = torch.randint(0, fc.vocab_size, (1, 27), generator=gen)
    speaker = torch.randn(1, fc.spk_embed_dim, generator=gen)
    cases = {
        "flow_no_prompt": (torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, fc.output_size)),
        "flow_with_prompt": (
            torch.randint(0, fc.vocab_size, (1, 11), generator=gen),
            torch.randn(1, 22, fc.output_size, generator=gen) - 5,
        ),
    }
    for name, (pt, pf) in cases.items():
        with torch.no_grad():
            ref, _ = up.inference(
                token=tokens.int(),
                token_len=torch.tensor([tokens.shape[1]], dtype=torch.int32),
                prompt_token=pt.int(),
                prompt_token_len=torch.tensor([pt.shape[1]], dtype=torch.int32),
                prompt_feat=pf,
                prompt_feat_len=torch.tensor([pf.shape[1]], dtype=torch.int32),
                embedding=speaker,
                streaming=False,
                finalize=True,
            )
        mine = ours.inference(tokens, pt, pf, speaker)
        assert ref.shape == mine.shape, (ref.shape, mine.shape)
        out[name] = (ref - mine).abs().max().item()
        out[f"{name}_frames"] = mine.shape[2]
    out["flow_peak"] = mine.abs().max().item()
    return out


def _check_hift(hc, ours, state: dict) -> dict:
    from cosyvoice.hifigan.f0_predictor import ConvRNNF0Predictor
    from cosyvoice.hifigan.generator import HiFTGenerator

    up = HiFTGenerator(
        in_channels=hc.in_channels,
        base_channels=hc.base_channels,
        nb_harmonics=hc.nb_harmonics,
        sampling_rate=hc.sampling_rate,
        nsf_alpha=hc.nsf_alpha,
        nsf_sigma=hc.nsf_sigma,
        nsf_voiced_threshold=hc.nsf_voiced_threshold,
        upsample_rates=list(hc.upsample_rates),
        upsample_kernel_sizes=list(hc.upsample_kernel_sizes),
        istft_params={"n_fft": hc.n_fft, "hop_len": hc.hop_len},
        resblock_kernel_sizes=list(hc.resblock_kernel_sizes),
        resblock_dilation_sizes=[list(x) for x in hc.resblock_dilation_sizes],
        source_resblock_kernel_sizes=list(hc.source_resblock_kernel_sizes),
        source_resblock_dilation_sizes=[list(x) for x in hc.source_resblock_dilation_sizes],
        lrelu_slope=hc.lrelu_slope,
        audio_limit=hc.audio_limit,
        f0_predictor=ConvRNNF0Predictor(1, hc.in_channels, hc.f0_cond_channels),
    ).eval()
    up.load_state_dict(state, strict=True)
    out = {}
    mel = torch.randn(1, hc.in_channels, 40, generator=torch.Generator().manual_seed(2)) - 4
    real_randn_like = torch.randn_like

    def upstream_source(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # the random start phases (torch.rand) differ per seed
        torch.randn_like = torch.zeros_like  # no additive noise
        try:
            f0 = up.f0_predictor(mel)
            s, _, _ = up.m_source(up.f0_upsamp(f0[:, None]).transpose(1, 2))
            return s.transpose(1, 2)
        finally:
            torch.randn_like = real_randn_like

    with torch.no_grad():
        f0 = ours.f0_predictor(mel)
        out["f0_predictor"] = (up.f0_predictor(mel) - f0).abs().max().item()
        out["f0_mean_hz"] = f0.mean().item()
        ref_source = upstream_source(0)
        out["upstream_source_seed_dependence"] = (
            (upstream_source(1) - ref_source).abs().max().item()
        )
        quiet = ours.source_noise.clone()
        ours.source_noise.zero_()
        source, _ = ours._source(f0, 0, None)
        out["source_without_noise"] = (ref_source - source).abs().max().item()
        # a contour the tiny predictor never gives: rising, falling, and unvoiced frames
        contour = torch.cat([torch.linspace(80, 320, 30), torch.linspace(300, 90, 25)])
        contour = torch.cat([contour, torch.zeros(10), torch.full((15,), 210.0)])[None]
        torch.randn_like = torch.zeros_like
        try:
            s, _, _ = up.m_source(up.f0_upsamp(contour[:, None]).transpose(1, 2))
        finally:
            torch.randn_like = real_randn_like
        out["source_f0_contour"] = (
            (s.transpose(1, 2) - ours._source(contour, 0, None)[0]).abs().max().item()
        )
        wave_quiet, _, _ = ours.inference(mel)
        torch.randn_like = torch.zeros_like
        try:
            ref_quiet, _ = up.inference(mel)
        finally:
            torch.randn_like = real_randn_like
        out["hift_without_noise"] = (ref_quiet - wave_quiet).abs().max().item()
        ours.source_noise.copy_(quiet)
        wave, source, _ = ours.inference(mel)
        out["hift_same_source"] = (up.decode(x=mel, s=source) - wave).abs().max().item()
        out["hift_samples"] = wave.shape[1]
        out["hift_peak"] = wave.abs().max().item()
    return out


if __name__ == "__main__":
    main()
