"""CosyVoice2's flow and HiFT from tiny random weights in the released formats: strict loading,
mel and wave lengths, the prompt's effect, the fixed noise, and the config reader's refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from cosyvoice2_tiny_flow import TINY_FLOW_HEADER, tiny_flow_yaml_sections, write_tiny_flow_hift
from opens2s.audio.cosyvoice2_flow import (
    CausalMaskedDiffWithXvec,
    causal_flow_config,
    cosyvoice2_hift_config,
)
from opens2s.audio.glm4voice_decoder import DecoderLoadError, load_strict, read_config
from opens2s.audio.glm4voice_hift import HiFTGenerator

NO_PROMPT = (torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 80))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cosyvoice2-flow")
    (d / "cosyvoice2.yaml").write_text(TINY_FLOW_HEADER + "\n" + tiny_flow_yaml_sections())
    write_tiny_flow_hift(d, seed=0)
    return d


def _flow(d: Path, weights: Path | None = None) -> CausalMaskedDiffWithXvec:
    cfg = causal_flow_config(read_config(d / "cosyvoice2.yaml"))
    flow = CausalMaskedDiffWithXvec(cfg)
    load_strict(flow, weights or d / "flow.pt")
    return flow.eval()


@pytest.fixture(scope="module")
def flow(tiny) -> CausalMaskedDiffWithXvec:
    torch.set_num_threads(1)  # the machine is shared; tiny ops gain nothing from threads
    return _flow(tiny)


def _tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 6561, (1, n), generator=torch.Generator().manual_seed(seed))


def _speaker(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 192, generator=torch.Generator().manual_seed(seed))


def test_config_reads_the_tiny_sections_and_evaluates_ref_arithmetic(tiny):
    cfg = read_config(tiny / "cosyvoice2.yaml")
    fc = causal_flow_config(cfg)
    assert (fc.vocab_size, fc.token_mel_ratio, fc.pre_lookahead_len) == (6561, 2, 3)
    assert fc.static_chunk_size == 25
    assert fc.decoder_static_chunk_size == 50  # !ref <chunk_size> * <token_mel_ratio>
    assert fc.channels == (16,) and fc.inference_cfg_rate == 0.7
    hc = cosyvoice2_hift_config(cfg)
    assert (hc.sampling_rate, hc.hop, hc.upsample_rates) == (24000, 480, (8, 5, 3))
    assert hc.frame_rate_phase


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("        num_blocks: 2\n", "", "flow.encoder.num_blocks"),
        ("            channels: [16]\n", "            channels: 16\n", "estimator.channels"),
        ("    pre_lookahead_len: 3\n", "    pre_lookahead_len: 'three'\n", "pre_lookahead_len"),
        ("            n_blocks: 1\n", "            n_blocks: true\n", "estimator.n_blocks"),
        ("    token_mel_ratio: !ref <token_mel_ratio>\n", "", "flow.token_mel_ratio"),
        ("            in_channels: 320\n", "            in_channels: 240\n", "in_channels"),
        ("        output_size: 8\n", "        output_size: 16\n", "flow.encoder.output_size"),
        ("<chunk_size> * <token_mel_ratio>", "<chunk_size> * <nowhere>", "static_chunk_size"),
    ],
)
def test_config_reader_refuses_a_broken_flow_section_naming_the_field(tmp_path, old, new, named):
    text = tiny_flow_yaml_sections()
    assert old in text
    path = tmp_path / "cosyvoice2.yaml"
    path.write_text(TINY_FLOW_HEADER + "\n" + text.replace(old, new, 1))
    with pytest.raises(DecoderLoadError, match=re.escape(named)):
        causal_flow_config(read_config(path), str(path))


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("    base_channels: 16\n", "", "hift.base_channels"),
        (
            "    source_resblock_kernel_sizes: [7, 7, 11]\n",
            "    source_resblock_kernel_sizes: [7, 11]\n",
            "hift.source_resblock_kernel_sizes",
        ),
        ("        hop_len: 4\n", "        hop_len: four\n", "hift.istft_params.hop_len"),
    ],
)
def test_config_reader_refuses_a_broken_hift_section_naming_the_field(tmp_path, old, new, named):
    text = tiny_flow_yaml_sections()
    assert old in text
    path = tmp_path / "cosyvoice2.yaml"
    path.write_text(TINY_FLOW_HEADER + "\n" + text.replace(old, new, 1))
    with pytest.raises(DecoderLoadError, match=re.escape(named)):
        cosyvoice2_hift_config(read_config(path), str(path))


def test_config_reader_refuses_a_file_without_flow_or_hift(tmp_path):
    path = tmp_path / "cosyvoice2.yaml"
    path.write_text(TINY_FLOW_HEADER)
    with pytest.raises(DecoderLoadError, match="'flow'"):
        causal_flow_config(read_config(path))
    with pytest.raises(DecoderLoadError, match="'hift'"):
        cosyvoice2_hift_config(read_config(path))


@pytest.mark.parametrize("fault", ["missing", "stray", "misshaped"])
def test_flow_loads_strictly_naming_the_wrong_tensor(tiny, tmp_path, fault):
    state = torch.load(tiny / "flow.pt", weights_only=True)
    name = "decoder.estimator.mid_blocks.1.0.block2.block.2.weight"  # a LayerNorm weight
    if fault == "missing":
        del state[name]
    elif fault == "stray":
        name = "decoder.estimator.mid_blocks.1.0.block2.block.1.weight"  # GroupNorm's place
        state[name] = torch.ones(16)
    else:
        state[name] = torch.ones(17)
    torch.save(state, tmp_path / "flow.pt")
    with pytest.raises(DecoderLoadError, match=re.escape(name)):
        _flow(tiny, tmp_path / "flow.pt")


def test_hift_loads_strictly_naming_a_missing_tensor(tiny, tmp_path):
    state = torch.load(tiny / "hift.pt", weights_only=True)
    del state["source_downs.0.weight"]  # the 15x source downsampler only a 3-stage HiFT has
    torch.save(state, tmp_path / "hift.pt")
    hift = HiFTGenerator(cosyvoice2_hift_config(read_config(tiny / "cosyvoice2.yaml")))
    with pytest.raises(DecoderLoadError, match=re.escape("source_downs.0.weight")):
        load_strict(hift, tmp_path / "hift.pt")


def test_mel_has_two_frames_per_token_and_is_finite(flow):
    for n in (1, 7, 30):
        mel = flow.inference(_tokens(n, seed=n), *NO_PROMPT, _speaker())
        assert mel.shape == (1, 80, 2 * n)
        assert torch.isfinite(mel).all()
    assert -8 < mel.mean().item() < 0  # the tiny head sits near log-mel values


def test_a_prompt_changes_the_mel_but_not_its_length(flow):
    tokens = _tokens(20, seed=1)
    plain = flow.inference(tokens, *NO_PROMPT, _speaker())
    prompt_tokens = _tokens(9, seed=2)
    prompt_mel = torch.randn(1, 18, 80, generator=torch.Generator().manual_seed(3)) - 5
    prompted = flow.inference(tokens, prompt_tokens, prompt_mel, _speaker())
    assert prompted.shape == plain.shape == (1, 80, 40)
    assert (prompted - plain).abs().max() > 1e-3
    other_speaker = flow.inference(tokens, *NO_PROMPT, _speaker(seed=1))
    assert (other_speaker - plain).abs().max() > 1e-3


def test_the_same_input_gives_the_same_mel_across_loads_and_global_seeds(tiny, flow):
    tokens = _tokens(12, seed=4)
    torch.manual_seed(123)
    a = flow.inference(tokens, *NO_PROMPT, _speaker())
    torch.manual_seed(456)
    b = _flow(tiny).inference(tokens, *NO_PROMPT, _speaker())
    assert torch.equal(a, b)
    # the start noise is upstream's table: torch.randn(1, 80, 15000) right after seeding 0
    torch.manual_seed(0)
    assert torch.equal(flow.start_noise(24), torch.randn(1, 80, 15000)[:, :, :24])


def test_flow_refuses_out_of_range_tokens_and_a_wrong_speaker(flow):
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 6561\)"):
        flow.inference(torch.tensor([[5, 6561]]), *NO_PROMPT, _speaker())
    with pytest.raises(ValueError, match="embedding must be"):
        flow.inference(_tokens(3, 0), *NO_PROMPT, torch.zeros(1, 80))


def test_hift_gives_24khz_audio_of_480_samples_per_frame(tiny, flow):
    hc = cosyvoice2_hift_config(read_config(tiny / "cosyvoice2.yaml"))
    hift = HiFTGenerator(hc)
    load_strict(hift, tiny / "hift.pt")
    hift.eval()
    mel = flow.inference(_tokens(15, seed=5), *NO_PROMPT, _speaker())
    wave, source, _ = hift.inference(mel)
    assert hc.sampling_rate == 24000
    assert wave.shape == (1, 30 * 480) and source.shape == (1, 1, 30 * 480)
    assert torch.isfinite(wave).all() and 0 < wave.abs().max() <= hc.audio_limit
    again, _, _ = hift.inference(mel)
    assert torch.equal(wave, again)  # the source noise is a fixed table too
