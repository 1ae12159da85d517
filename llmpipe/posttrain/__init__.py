"""Post-training: chat template, SFT, DPO and RL on verifiable rewards."""
