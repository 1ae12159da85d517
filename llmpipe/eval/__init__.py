"""Evaluation of any stage's model: losses, bits per byte, fact probes, arithmetic, chat."""
