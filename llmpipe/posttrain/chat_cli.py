"""``llmpipe chat --model DIR``: talk to any stage's model in the chat template, on stdin.

Each line you type is a user turn; the reply is printed and the conversation kept, so
follow-ups see the history. ``/reset`` starts over, end of input (Ctrl-D) exits. When the
history outgrows the context, the oldest turns are dropped (a system message stays).
"""
from __future__ import annotations

import argparse
import sys

from llmpipe.model.generate import Sampling, generate
from llmpipe.tokenizer.chat import END, prompt_ids


def fit_history(tokenizer, messages: list[dict], room: int) -> list[dict]:
    """``messages`` without their oldest turns until the prompt leaves ``room`` tokens of context."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    while len(turns) > 1 and len(prompt_ids(tokenizer, system + turns)) > room:
        turns = turns[2:] if len(turns) > 2 else turns[-1:]
    return system + turns


def reply(model, tokenizer, messages: list[dict], sampling: Sampling) -> str:
    """The model's next assistant turn (generation stops at ``sampling.stop_ids``, not shown)."""
    (new,) = generate(model, [prompt_ids(tokenizer, messages)], sampling, tokenizer.pad_id)
    return tokenizer.decode(new).strip()


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--model", required=True, help="model directory of any stage (results/sft, ...)")
    parser.add_argument("--system", help="a system message to start every conversation with")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu) or a torch device")


def run(args: argparse.Namespace, stage: str) -> int:
    from llmpipe.model.device import pick_device
    from llmpipe.model.directory import load_model, load_tokenizer

    model = load_model(args.model, pick_device(args.device))
    tokenizer = load_tokenizer(args.model)
    stop = (tokenizer.special_tokens[END], tokenizer.eos_id, tokenizer.bos_id)
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    interactive = sys.stdin.isatty()
    turn = 0
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            messages = list(start)
            print("(history cleared)", flush=True)
            continue
        messages.append({"role": "user", "content": text})
        room = model.config.context_length - args.max_new_tokens
        messages = fit_history(tokenizer, messages, room)
        sampling = Sampling(
            args.max_new_tokens, args.temperature, args.top_k, None, stop_ids=stop, seed=args.seed + turn
        )
        answer = reply(model, tokenizer, messages, sampling)
        messages.append({"role": "assistant", "content": answer})
        turn += 1
        print(("assistant> " if interactive else "") + answer, flush=True)
