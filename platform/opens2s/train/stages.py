"""Training stages: which parameters each stage trains, and LoRA on the LLM.

The recipe (docs/training.md): ``understand`` trains the audio adapter on continuation records
(speech in, the text an LLM continued from its transcript out) with the LLM frozen, as BLSP-Emo
pretrains; ``speak`` trains the TTS side (llm2tts + llm_ln and the TTS LM with its speaker
projection spk2tts + spk_ln) on speech the LLM's hidden states describe, the LLM frozen;
``align`` teaches all the bridges (audio adapter, llm2tts + llm_ln, spk2tts + spk_ln) with
everything else frozen, as upstream's from-scratch script does; ``finetune`` trains the audio
adapter, the LLM and the TTS LM (bridges included). The audio encoder is frozen in every stage.
"""

from __future__ import annotations

from torch import nn

from opens2s.config.train import LoraSection, Stage

TRAINABLE_PREFIXES: dict[str, tuple[str, ...]] = {
    # Text-only targets give the TTS-side bridges no signal: they stay frozen (weight decay
    # would otherwise shrink them for nothing).
    "understand": ("audio_adapter.",),
    "speak": ("llm2tts.", "llm_ln.", "tts_lm_model."),
    "align": (
        "audio_adapter.",
        "llm2tts.",
        "llm_ln.",
        "tts_lm_model.spk2tts.",
        "tts_lm_model.spk_ln.",
    ),
    "finetune": (
        "audio_adapter.",
        "llm2tts.",
        "llm_ln.",
        "llm_model.",
        "tts_lm_model.",
    ),
}
"""Parameter-name prefixes (OpenS2S names) each stage trains; every other parameter is frozen."""


def apply_stage(model: nn.Module, stage: Stage) -> list[str]:
    """Set ``requires_grad`` for ``stage`` and return the names of the trainable parameters.

    Raises ValueError when the stage would train nothing (the model lacks the OpenS2S names).
    """
    if stage not in TRAINABLE_PREFIXES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(TRAINABLE_PREFIXES)}")
    prefixes = TRAINABLE_PREFIXES[stage]
    trainable = []
    for name, param in model.named_parameters():
        train_it = name.startswith(prefixes)
        param.requires_grad_(train_it)
        if train_it:
            trainable.append(name)
    if not trainable:
        raise ValueError(
            f"stage {stage!r} trains parameters named {prefixes}, but the model has none of them"
        )
    return trainable


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Recompute layer activations in backward (non-reentrant, so frozen inputs are fine);
    returns how many submodules now checkpoint their layers."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return sum(1 for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True)


def stage_lora(lora: LoraSection | None, stage: Stage) -> LoraSection | None:
    """The LoRA settings a stage uses: LoRA adapts the LLM, which only ``finetune`` trains."""
    return lora if stage == "finetune" else None


def add_lora(model: nn.Module, lora: LoraSection) -> list[str]:
    """Put LoRA adapters on the LLM's ``lora.target_modules``; only the adapters train in the LLM.

    The rest of the stage's trainable set is kept. Returns the trainable parameter names.
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
    )
    # Freeze the LLM's own weights; inject_adapter_in_model adds trainable lora_A / lora_B.
    for param in model.llm_model.parameters():
        param.requires_grad_(False)
    model.llm_model = inject_adapter_in_model(config, model.llm_model)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the LLM's weights so the exported model has plain OpenS2S names."""
    from peft.tuners.lora import LoraLayer

    llm = model.llm_model
    for parent in list(llm.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, child_name, child.get_base_layer())
    return model
