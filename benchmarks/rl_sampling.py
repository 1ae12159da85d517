"""RL step time with the plain generation engine against prompt sharing + compaction, same run.

    python benchmarks/rl_sampling.py --model results/dpo --problems results/posttrain_data/rl_train.jsonl
        [--config config.yaml] [--steps 3] [--test results/posttrain_data/rl_test.jsonl]

Each of ``--steps`` RL steps (the config's ``rl`` section: prompts_per_step x group_size samples
at its temperature) runs twice from the same weights, the variants interleaved so both see the
same machine load: ``plain`` (every row prefilled, finished rows kept to the end) and ``shared``
(each problem prefilled once, its cache copied to its samples; finished rows leave the batch).
It prints the seconds of the sampling and of the whole step (sampling + the PPO updates), the
samples' mean reward, length and ended fraction under each (the same distribution: close, not
equal), and whether greedy completions are identical.
"""
from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time

import torch

from llmpipe.config import load_config
from llmpipe.model.directory import load_model, load_tokenizer
from llmpipe.model.generate import Sampling, generate_batched
from llmpipe.posttrain import rl, trainer
from llmpipe.tasks.formats import read_problems
from llmpipe.tasks.rewards import reward
from llmpipe.tokenizer.chat import END
from llmpipe.train import runtime as rt
from llmpipe.train.schedule import batch_order

VARIANTS = {"plain": {"share_prompts": False, "compact": False}, "shared": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the model RL starts from (results/dpo)")
    parser.add_argument("--problems", required=True, help="rl_train.jsonl")
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--test", help="rl_test.jsonl: also time one held-out evaluation (greedy + pass@k) each way")
    args = parser.parse_args()
    p = load_config(args.config)["rl"]
    runtime = rt.start("cpu")
    base, tokenizer = load_model(args.model), load_tokenizer(args.model)
    problems, _ = rl.encode_problems(tokenizer, read_problems(args.problems), base.config.context_length,
                                     p["max_new_tokens"], args.problems)
    order = batch_order(len(problems), p["prompts_per_step"], args.steps, p["seed"])
    G, end = p["group_size"], tokenizer.special_tokens[END]
    times: dict[str, dict[str, list[float]]] = {v: {"sample": [], "step": []} for v in VARIANTS}
    samples: dict[str, list] = {v: [] for v in VARIANTS}
    greedy: dict[str, list] = {}
    engine_of_rl = rl.generate_batched
    for step, index in enumerate(order, start=1):
        batch = [problems[i] for i in index.tolist()]
        prompts = [pr.prompt for pr in batch for _ in range(G)]
        for name, engine in VARIANTS.items():
            model = copy.deepcopy(base).eval()
            sampling = Sampling(p["max_new_tokens"], p["temperature"], stop_ids=(end,), seed=step)
            t0 = time.perf_counter()
            out = generate_batched(model, prompts, sampling, tokenizer.pad_id, len(prompts), **engine)
            times[name]["sample"].append(time.perf_counter() - t0)
            samples[name] += [(reward(tokenizer.decode(c.tokens), batch[i // G].answer, p["format_weight"]),
                               len(c.tokens), c.ended) for i, c in enumerate(out)]
            if step == 1:
                greedy[name] = generate_batched(model, [pr.prompt for pr in batch],
                                                Sampling(p["max_new_tokens"], 0.0, stop_ids=(end,)),
                                                tokenizer.pad_id, len(batch), **engine)
            optimizer = trainer.make_optimizer(model, p, runtime)
            rl.generate_batched = functools.partial(engine_of_rl, **engine)  # the step's own sampling
            try:
                t0 = time.perf_counter()
                rl.rl_step(model, optimizer, tokenizer, batch, p, p["seed"] * 100_003 + step, runtime)
                times[name]["step"].append(time.perf_counter() - t0)
            finally:
                rl.generate_batched = engine_of_rl
    print(f"{args.steps} RL steps of {p['prompts_per_step']} x {G} samples, max_new_tokens {p['max_new_tokens']}, "
          f"temperature {p['temperature']}, {torch.get_num_threads()} threads")
    print("| variant | sampling s (median) | RL step s (median) | mean reward | mean length | ended |")
    print("|---|---|---|---|---|---|")
    for name in VARIANTS:
        r, n, e = zip(*samples[name])
        print(f"| {name} | {statistics.median(times[name]['sample']):.2f} | "
              f"{statistics.median(times[name]['step']):.2f} | {statistics.mean(r):.3f} | {statistics.mean(n):.1f} | "
              f"{statistics.mean(e):.2f} |")
    if args.test:
        test, _ = rl.encode_problems(tokenizer, read_problems(args.test), base.config.context_length,
                                     p["max_new_tokens"], args.test)
        test = test[: p["eval_problems"]] if p["eval_problems"] else test
        evals = {}
        for name, engine in VARIANTS.items():
            rl.generate_batched = functools.partial(engine_of_rl, **engine)
            try:
                t0 = time.perf_counter()
                metrics = rl.heldout_metrics(base, tokenizer, test, p, runtime)
                evals[name] = (time.perf_counter() - t0, metrics)
            finally:
                rl.generate_batched = engine_of_rl
        k = p["eval_pass_k"]
        for name, (seconds, m) in evals.items():
            print(f"held-out evaluation ({len(test)} problems, greedy + {k} samples each), {name}: {seconds:.1f} s, "
                  f"pass@1 {m['heldout_pass_at_1']:.3f}, sampled pass@1 {m['heldout_pass_at_1_sampled']:.3f}, "
                  f"pass@{k} {m[f'heldout_pass_at_{k}']:.3f}")
        print(f"held-out evaluation speed-up {evals['plain'][0] / evals['shared'][0]:.2f}x; identical greedy "
              f"replies: {evals['plain'][1]['_examples'] == evals['shared'][1]['_examples']}")
    plain, shared = (statistics.median(times[v]["step"]) for v in VARIANTS)
    plain_s, shared_s = (statistics.median(times[v]["sample"]) for v in VARIANTS)
    print(f"sampling speed-up {plain_s / shared_s:.2f}x, RL step speed-up {plain / shared:.2f}x; "
          f"identical greedy completions: {greedy['plain'] == greedy['shared']}")


if __name__ == "__main__":
    main()
