"""The recipe's stages each train exactly their parameters and lower their loss on tiny data:
``understand`` (audio adapter, on speech-in / continued-text-out records) and ``speak`` (the TTS
side, on records with assistant speech); gradient checkpointing keeps fewer activations and gives
the same gradients."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from opens2s.model import build_model, build_tokenizer
from opens2s.model.records import RecordEncoder, collate, parse_record
from opens2s.train.stages import TRAINABLE_PREFIXES, apply_stage, enable_gradient_checkpointing

CONTINUATIONS = [
    ("I finally finished the marathon today.", "and I could not stop smiling at the finish line."),
    ("My sister moved to another city last week.", "so the house feels very quiet without her."),
    ("The exam results came out this morning.", "and I passed every subject I was worried about."),
]


def _wave(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(16000 * 2) / 16000
    tone = np.sin(2 * np.pi * (150 + 40 * seed) * t) * (0.3 + 0.2 * np.sin(2 * np.pi * 3 * t))
    return (0.5 * tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _records(tmp_path, *, speech: bool) -> list[dict]:
    out = []
    for i, (_, continuation) in enumerate(CONTINUATIONS):
        sf.write(tmp_path / f"u{i}.wav", _wave(i), 16000)
        answer: dict = {"text": continuation}
        if speech:
            rng = np.random.default_rng(100 + i)
            answer["speech_units"] = "".join(f"<|audio_{u}|>" for u in rng.integers(0, 64, 20))
        out.append(
            {
                "id": f"r{i}",
                "messages": [
                    {"role": "user", "content": [{"audio": f"u{i}.wav"}]},
                    {"role": "assistant", "content": [answer]},
                ],
            }
        )
    return out


def _batch(model, tmp_path, *, speech: bool) -> dict:
    encoder = RecordEncoder(build_tokenizer("tiny"), model.config, tmp_path)
    unit_vocab = model.config.unit_vocab_size
    samples = [
        encoder.encode(parse_record(r, unit_vocab_size=unit_vocab))
        for r in _records(tmp_path, speech=speech)
    ]
    batch = collate(samples)
    return {k: v for k, v in batch.items() if k != "ids"}


def _train(model, batch, steps: int = 30) -> list[tuple[float, float]]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.05)
    losses = []
    for _ in range(steps):
        out = model(**batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append((float(out.llm_loss), float(out.tts_loss)))
    return losses


@pytest.mark.parametrize(
    ("stage", "speech", "loss_index"), [("understand", False, 0), ("speak", True, 1)]
)
def test_stage_trains_exactly_its_parameters_and_lowers_its_loss(
    tmp_path, stage, speech, loss_index
):
    model = build_model("tiny", seed=0).train()
    trainable = apply_stage(model, stage)
    prefixes = TRAINABLE_PREFIXES[stage]
    assert trainable and all(n.startswith(prefixes) for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = _train(model, _batch(model, tmp_path, speech=speech))

    first, last = losses[0][loss_index], losses[-1][loss_index]
    # At least a nat in 30 steps (the frozen random LLM bounds what the adapter alone can do).
    assert last < first - 1.0, (stage, losses)
    after = dict(model.named_parameters())
    for name, old in before.items():
        changed = not torch.equal(after[name].detach(), old)
        assert changed == name.startswith(prefixes), f"{stage}: {name} changed={changed}"
    # The LLM is frozen in both: its text loss moves only through the adapter (understand).
    assert not any(n.startswith("llm_model.") for n in trainable)


def test_understand_leaves_the_tts_side_and_speak_leaves_the_listening_side():
    model = build_model("tiny", seed=0)
    heard = set(apply_stage(model, "understand"))
    spoken = set(apply_stage(model, "speak"))
    assert not heard & spoken
    assert any(n.startswith("audio_adapter.") for n in heard)
    assert any(n.startswith("tts_lm_model.spk2tts.") for n in spoken)
    assert any(n.startswith("llm2tts.") for n in spoken)


def _saved_bytes(model, batch) -> tuple[int, dict[str, torch.Tensor], float]:
    """Bytes autograd keeps for backward, the gradients and the loss of one step."""
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return sum(saved), grads, float(out.loss.detach())


def test_gradient_checkpointing_keeps_fewer_activations_and_gives_the_same_gradients(tmp_path):
    model = build_model("tiny", seed=0).train()
    apply_stage(model, "finetune")
    batch = _batch(model, tmp_path, speech=True)
    plain_bytes, plain_grads, plain_loss = _saved_bytes(model, batch)
    assert enable_gradient_checkpointing(model) >= 3  # encoder, LLM and TTS LM stacks
    ckpt_bytes, ckpt_grads, ckpt_loss = _saved_bytes(model, batch)

    assert ckpt_bytes < 0.6 * plain_bytes, (ckpt_bytes, plain_bytes)
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-6)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
