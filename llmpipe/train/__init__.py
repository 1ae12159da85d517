"""Training pieces: packed data, runtime, schedules, losses, log-probs, checkpoints, pretraining."""
