"""Post-training: its data, one trainer skeleton, SFT, DPO and RL on verifiable rewards, chat."""
