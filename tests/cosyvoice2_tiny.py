"""A tiny random-init CosyVoice2 model directory in the released CosyVoice2-0.5B layout.

``write_tiny_cosyvoice2(dir)`` writes ``cosyvoice2.yaml`` (hyperpyyaml text with the released
file's structure and tags, tiny sizes), ``llm.pt`` (state dict under upstream's Qwen2LM names),
``flow.pt`` / ``hift.pt`` (:mod:`cosyvoice2_tiny_flow`), ``campplus.onnx`` and
``speech_tokenizer_v2.onnx`` (small ONNX graphs with the released models' inputs and outputs) and
``CosyVoice-BlankEN/`` (a Qwen2 ``config.json`` and a byte-level BPE tokenizer as ``vocab.json`` +
``merges.txt`` + ``tokenizer_config.json``). The speech-token vocabulary (6561), speaker
embedding (192) and mel (80) keep their released sizes.

The ONNX stand-ins compute real, input-dependent functions: the speech tokenizer projects each
4 mel frames (25/s) to 8 values, rounds ``tanh`` of them to {-1, 0, 1} and reads the 8 digits in
base 3 (6561 codes, CosyVoice2's FSQ layout); CAM++ averages the fbank over time and projects it
to 192 values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from cosyvoice2_tiny_flow import TINY_FLOW_HEADER, tiny_flow_yaml_sections, write_tiny_flow_hift

SPEECH_TOKENS = 6561
HIDDEN = 32
TEXT_VOCAB = 320  # BPE entries; the config's vocab_size leaves room for the added specials
QWEN_VOCAB = 352
EOS_BIAS = 6.0  # end-of-speech is likely once allowed, so generations stop between min and max

TEXT = [
    "Hello world, this is a small test of speech.",
    "Speak happily, with a cheerful, bright voice.",
    "Speak sadly, slowly and softly.",
    "The quick brown fox jumps over the lazy dog!",
    "Is it raining today? I think it is; take an umbrella.",
]

_LLM_SECTION = """\
llm_input_size: {hidden}
llm_output_size: {hidden}
qwen_pretrain_path: ''

llm: !new:cosyvoice.llm.llm.Qwen2LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: {speech_tokens}
    length_normalized_loss: True
    lsm_weight: 0
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1
"""

_TAIL = """\
get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
allowed_special: 'all'
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1920
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 480
    win_size: 1920
    fmin: 0
    fmax: 8000
    center: False
"""


def tiny_yaml() -> str:
    """The whole tiny cosyvoice2.yaml."""
    return "\n".join(
        [
            "# set random seed, so that you may reproduce your result.",
            "__set_seed1: !apply:random.seed [1986]",
            TINY_FLOW_HEADER,
            _LLM_SECTION.format(hidden=HIDDEN, speech_tokens=SPEECH_TOKENS),
            tiny_flow_yaml_sections(),
            _TAIL,
        ]
    )


def write_blank_en(dir: Path) -> None:
    """``CosyVoice-BlankEN/``: a tiny Qwen2 config and a byte-level BPE tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT * 4, trainer=trainer)
    tok.model.save(str(dir))
    n = tok.get_vocab_size()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # Qwen2's own
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(n + i): {
                "content": s,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, s in enumerate(specials)
        },
    }
    (dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    # the released config.json's fields and format (transformers 4.x: rope_theta at the top)
    qwen = {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": n,
        "eos_token_id": n,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "max_position_embeddings": 4096,
        "max_window_layers": 2,
        "model_type": "qwen2",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 4096,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": QWEN_VOCAB,
    }
    (dir / "config.json").write_text(json.dumps(qwen, indent=2))


def _speech_tokenizer_onnx(seed: int):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.5, (8, 128, 4)).astype(np.float32)
    powers = (3 ** np.arange(8, dtype=np.float32)).reshape(1, 8, 1)
    nodes = [
        helper.make_node("Conv", ["feats", "W"], ["h"], kernel_shape=[4], strides=[4]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Round", ["t"], ["r"]),
        helper.make_node("Add", ["r", "one"], ["digits"]),
        helper.make_node("Mul", ["digits", "powers"], ["place"]),
        helper.make_node("ReduceSum", ["place", "axis1"], ["code"], keepdims=0),
        helper.make_node("Cast", ["code"], ["indices"], to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_speech_tokenizer_v2",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [
            helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "T4"]),
        ],
        [
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(np.ones((1,), np.float32), "one"),
            numpy_helper.from_array(powers, "powers"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _campplus_onnx(seed: int):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed + 1)
    proj = rng.normal(0.0, 0.3, (80, 192)).astype(np.float32)
    nodes = [
        helper.make_node("Abs", ["input"], ["a"]),  # the input is mean-normalised over time
        helper.make_node("ReduceMean", ["a", "axis1"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "P"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_campplus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", "T", 80])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", 192])],
        [
            numpy_helper.from_array(proj, "P"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def write_llm_pt(dir: Path, seed: int = 0) -> None:
    """Random-init ``llm.pt`` for the tiny yaml and ``CosyVoice-BlankEN`` in ``dir``."""
    from opens2s.audio.cosyvoice2_llm import Qwen2LM, lm_config, qwen2_config
    from opens2s.audio.glm4voice_decoder import read_config

    torch.manual_seed(seed)
    lm = Qwen2LM(
        lm_config(read_config(dir / "cosyvoice2.yaml")), qwen2_config(dir / "CosyVoice-BlankEN")
    )
    with torch.no_grad():
        lm.llm_decoder.weight.mul_(4.0)  # peaked enough that top-p/top-k keep a few tokens
        lm.llm_decoder.bias[SPEECH_TOKENS] = EOS_BIAS
    torch.save(lm.state_dict(), dir / "llm.pt")


def write_tiny_cosyvoice2(dir: Path, seed: int = 0) -> Path:
    """Write a complete tiny CosyVoice2 directory at ``dir`` (created if needed); returns it."""
    import onnx

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "cosyvoice2.yaml").write_text(tiny_yaml())
    write_blank_en(dir / "CosyVoice-BlankEN")
    write_llm_pt(dir, seed)
    write_tiny_flow_hift(dir, seed)
    onnx.save(_speech_tokenizer_onnx(seed), str(dir / "speech_tokenizer_v2.onnx"))
    onnx.save(_campplus_onnx(seed), str(dir / "campplus.onnx"))
    return dir
