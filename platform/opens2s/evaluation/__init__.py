"""Evaluation of a trained or released model on spoken eval sets (``opens2s eval``; docs/eval.md)."""
