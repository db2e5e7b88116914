"""opens2s.model: the OpenS2S speech-to-speech LM, its records, tokenizer and streaming decoder.

Knows nothing of Ray. Public API (see docs/contracts.md):
``OpenS2SConfig``, ``OpenS2SModel``, ``build_model``, ``build_tokenizer``, ``load_model``.
"""

from opens2s.model.configuration import OpenS2SConfig
from opens2s.model.modeling import OpenS2SModel, OpenS2SOutput
from opens2s.model.presets import PRESETS, build_model, load_model, model_from_section
from opens2s.model.tokenizer import build_tokenizer

__all__ = [
    "PRESETS",
    "OpenS2SConfig",
    "OpenS2SModel",
    "OpenS2SOutput",
    "build_model",
    "build_tokenizer",
    "load_model",
    "model_from_section",
]
