"""Pretraining: the packed-data reader, checkpoints and the training loop."""
