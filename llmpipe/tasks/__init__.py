"""The world's tasks: its facts and arithmetic as data, questions, scoring and rewards.

One source for the toy web (pretraining pages), the post-training data and the evaluation,
as nanochat's ``tasks/``: what is held out is decided here, once.
"""
