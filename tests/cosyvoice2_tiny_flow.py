"""Tiny random-init CosyVoice2 flow and HiFT in the released file formats (tests and checks).

``tiny_flow_yaml_sections`` gives the ``flow:`` and ``hift:`` sections of a cosyvoice2.yaml with
the released file's structure and tags (hyperpyyaml ``!new:`` / ``!ref``, including
``!ref <chunk_size> * <token_mel_ratio>``) at tiny sizes; they refer to the top-level
``spk_embed_dim``, ``token_frame_rate``, ``token_mel_ratio``, ``chunk_size``,
``num_decoding_left_chunks`` and ``sample_rate``, which :data:`TINY_FLOW_HEADER` defines.
``write_tiny_flow_hift`` writes ``flow.pt`` and ``hift.pt`` (state dicts under the released
tensor names) for those sections. The vocabulary (6561), speaker embedding (192) and mel (80)
keep their released sizes so that real token ids, CAM++ embeddings and mel frames fit.
"""

from __future__ import annotations

from pathlib import Path

import torch

GAIN = 10.0  # weight-norm gain of the tiny HiFT: peaks ~0.1, unclipped (15 clips, 6 is ~silent)

TINY_FLOW_HEADER = """\
sample_rate: 24000
spk_embed_dim: 192
token_frame_rate: 25
token_mel_ratio: 2
chunk_size: 25
num_decoding_left_chunks: -1
"""

_SECTIONS = """\
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: 8
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: 8
        attention_heads: 2
        linear_units: 16
        num_blocks: 2
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: 8
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
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
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [16]
            dropout: 0.0
            attention_head_dim: 8
            n_blocks: 1
            num_mid_blocks: 2
            num_heads: 2
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: 16
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: 16
"""


def tiny_flow_yaml_sections() -> str:
    """The ``flow:`` and ``hift:`` sections of a tiny cosyvoice2.yaml (hyperpyyaml text); they
    need the top-level keys of :data:`TINY_FLOW_HEADER` in the same file."""
    return _SECTIONS


def _parsed() -> dict:
    import tempfile

    from opens2s.audio.glm4voice_decoder import read_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cosyvoice2.yaml"
        path.write_text(TINY_FLOW_HEADER + "\n" + _SECTIONS)
        return read_config(path)


def write_tiny_flow_hift(dir: Path, seed: int = 0) -> None:
    """Write random-init ``flow.pt`` and ``hift.pt`` for :func:`tiny_flow_yaml_sections` into
    ``dir`` (created if needed)."""
    from opens2s.audio.cosyvoice2_flow import (
        CausalMaskedDiffWithXvec,
        causal_flow_config,
        cosyvoice2_hift_config,
    )
    from opens2s.audio.glm4voice_hift import HiFTGenerator

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    cfg = _parsed()
    torch.manual_seed(seed)
    flow = CausalMaskedDiffWithXvec(causal_flow_config(cfg))
    hift = HiFTGenerator(cosyvoice2_hift_config(cfg))
    with torch.no_grad():  # a trained-like scale: the mel head near log-mel values, F0 voiced
        flow.decoder.estimator.final_proj.bias.fill_(-4.0)
        hift.f0_predictor.classifier.bias.fill_(150.0)
        for name, p in hift.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(GAIN)
    torch.save(flow.state_dict(), dir / "flow.pt")
    torch.save(hift.state_dict(), dir / "hift.pt")
