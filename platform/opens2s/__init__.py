"""OpenS2S Platform: an empathetic speech-to-speech LM and the Ray platform around it."""

__version__ = "0.1.0"
