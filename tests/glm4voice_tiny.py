"""Tiny random-init GLM-4-Voice directories in the released file formats (tests and bench).

``write_tiny_decoder`` writes a ``glm-4-voice-decoder`` layout: a ``config.yaml`` with the
released file's structure and tags (hyperpyyaml ``!new:`` / ``!ref`` / ``!apply:``) at tiny sizes,
and ``flow.pt`` / ``hift.pt`` state dicts under the released tensor names.
``write_tiny_tokenizer`` writes a ``glm-4-voice-tokenizer`` layout: ``config.json`` (WhisperVQ
fields), ``model.safetensors`` (``model.encoder.*`` names) and ``preprocessor_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

GAIN = 6.0  # weight-norm gain: output RMS ~0.03, peaks ~0.16 (1.0 is near silent, 10 clips)

DECODER_YAML = """\
# set random seed, so that you may reproduce your result.
__set_seed1: !apply:random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]

# fixed params
sample_rate: 22050
spk_embed_dim: 192

flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: 32
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 16384
    input_frame_rate: 12.5
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.BlockConformerEncoder
        output_size: 32
        attention_heads: 2
        linear_units: 64
        num_blocks: 2
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'block_rel_selfattn'
        block_size: 10
        input_size: 32
        use_cnn_module: False
        macaron_style: False
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 80
        sampling_ratios: [1, 1, 1, 1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [32, 32]
            dropout: 0
            attention_head_dim: 16
            n_blocks: 1
            num_mid_blocks: 1
            num_heads: 2
            act_fn: 'gelu'

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: 32
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 8]
    upsample_kernel_sizes: [16, 16]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: 16
"""


def write_tiny_decoder(path: Path, seed: int = 0) -> Path:
    """A random-init decoder directory at tiny sizes; returns ``path``."""
    from opens2s.audio.glm4voice_decoder import flow_config, hift_config, read_config
    from opens2s.audio.glm4voice_flow import MaskedDiffWithXvec
    from opens2s.audio.glm4voice_hift import HiFTGenerator

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(DECODER_YAML)
    cfg = read_config(path / "config.yaml")
    torch.manual_seed(seed)
    flow = MaskedDiffWithXvec(flow_config(cfg))
    hift = HiFTGenerator(hift_config(cfg))
    with torch.no_grad():  # a trained-like scale: the mel head near log-mel values, F0 voiced
        flow.decoder.estimator.final_proj.bias.fill_(-4.0)
        hift.f0_predictor.classifier.bias.fill_(150.0)
        for name, p in hift.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(GAIN)
    torch.save(flow.state_dict(), path / "flow.pt")
    torch.save(hift.state_dict(), path / "hift.pt")
    return path


TOKENIZER_CONFIG = {
    "architectures": ["WhisperVQEncoder"],
    "model_type": "whisper",
    "d_model": 32,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "encoder_layers": 3,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
    "activation_function": "gelu",
    "pooling_kernel_size": 4,
    "pooling_type": "avg",
    "pooling_position": 2,
    "quantize_position": 2,
    "quantize_vocab_size": 16384,
    "quantize_causal_block_size": 200,
    "quantize_causal_encoder": False,
    "encoder_causal_attention": False,
    "encoder_causal_convolution": True,
    "quantize_encoder_only": False,
    "scale_embedding": False,
}


def write_tiny_tokenizer(path: Path, seed: int = 0) -> Path:
    """A random-init tokenizer directory at tiny sizes; returns ``path``."""
    from opens2s.audio.glm4voice_tokenizer import WhisperVQConfig, WhisperVQEncoder
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    torch.manual_seed(seed)
    model = WhisperVQEncoder(WhisperVQConfig.from_json(TOKENIZER_CONFIG))
    state = {f"model.encoder.{k}": v.contiguous() for k, v in model.state_dict().items()}
    # the released checkpoint also holds the layers past the quantizer, the final norm and a
    # decoder; the loader skips them as upstream's load_quantize_encoder does
    d = TOKENIZER_CONFIG["d_model"]
    state["model.encoder.layers.2.fc1.weight"] = torch.zeros(64, d)
    state["model.encoder.layer_norm.weight"] = torch.ones(d)
    state["model.decoder.embed_tokens.weight"] = torch.zeros(4, d)
    save_file(state, str(path / "model.safetensors"))
    WhisperFeatureExtractor(feature_size=128).save_pretrained(str(path))
    return path
