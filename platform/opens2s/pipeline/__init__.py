"""The end-to-end pipeline: corpus -> units -> training -> export -> serve -> one spoken turn."""
