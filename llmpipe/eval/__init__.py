"""Evaluation (loss, bits per byte, probes) and the KV-cache generation engine."""
