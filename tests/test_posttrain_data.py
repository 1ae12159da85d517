"""Post-training data: held-out discipline, answer style, length balance, user-file validation."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

from llmpipe.config import load_config
from llmpipe.posttrain import data
from llmpipe.tasks import arithmetic, facts, formats, rewards, world
from llmpipe.tasks.formats import DataFormatError
from llmpipe.tasks.heldout import from_config
from tests.conftest import REPO, parse_job_table


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("ptd")
    subprocess.run(
        [sys.executable, "-m", "llmpipe.cli", "posttrain-data", "--config", str(REPO / "config.yaml"),
         "--output", str(out), "--stats", str(out / "stats.json")],
        check=True, cwd=REPO,
    )
    files = {name: [json.loads(line) for line in (out / f"{name}.jsonl").open()] for name in data.OUTPUT_FILES}
    return files, json.loads((out / "stats.json").read_text())["extra"]


HELD = from_config(load_config(REPO / "config.yaml")["world"])


def test_heldout_split_is_stable_and_about_a_quarter():
    countries = [HELD.subject(c.name) for c in world.COUNTRIES]
    animals = [HELD.subject(a.name) for a in world.ANIMALS]
    assert 0.15 < sum(countries) / len(countries) < 0.35
    assert 0.15 < sum(animals) / len(animals) < 0.35
    assert HELD.subject("Egypt") == from_config(load_config(REPO / "config.yaml")["world"]).subject("Egypt")


def test_heldout_subjects_never_appear_in_training_conversations(generated):
    files, _ = generated
    heldout = {s for _, s, _ in world.fact_items() if HELD.subject(s)}
    text = json.dumps(files["sft_train"]) + json.dumps(files["dpo_train"])
    patterns = [re.compile(rf"\b{re.escape(s)}\b") for s in heldout]
    assert not [p.pattern for p in patterns if p.search(text)]
    asked = {q.subject for q in facts.heldout_questions(HELD)}
    assert asked == heldout
    assert len(files["sft_heldout"]) == len(facts.heldout_questions(HELD))


def test_rl_test_problems_are_never_trained_on(generated):
    files, _ = generated
    test = {r["prompt"] for r in files["rl_test"]}
    assert len(test) == len(files["rl_test"])
    assert not test & {r["prompt"] for r in files["rl_train"]}
    sft_users = {m["content"] for c in files["sft_train"] for m in c["messages"] if m["role"] == "user"}
    assert not test & {u.removeprefix("And ") for u in sft_users} and not test & sft_users
    assert not test & {p["prompt"] for p in files["dpo_train"]}
    assert files["rl_test"] == arithmetic.rl_test_problems(1234, 100, HELD)  # what the chat evaluation regenerates
    assert all(r["held_out"] for r in files["rl_test"])


def test_answers_are_checkable_sentences_and_worked_steps(generated):
    files, extra = generated
    conversations = files["sft_train"]
    assert extra["sft_train_kinds"]["system"] > 0 and extra["sft_train_kinds"]["multi_turn"] > 0
    worked = [m["content"] for c in conversations for m in c["messages"]
              if m["role"] == "assistant" and arithmetic.ANSWER_PREFIX in m["content"]]
    assert worked and all(w.splitlines()[-1].startswith("The answer is ") for w in worked)
    for w in worked:  # a count whose last value is the answer, and no equation stated anywhere
        count, _, final = w.splitlines()
        assert count.startswith("Count ") and count.rsplit(": ", 1)[1].rsplit(", ", 1)[-1].split(" is ")[0] \
            == final.removeprefix("The answer is ").rstrip(".")
        assert arithmetic.stated_facts(w) == set() and " = " not in w
    for r in files["rl_train"][:50]:
        question, answer = r["prompt"], int(r["answer"])
        assert arithmetic.worked_solution(question, answer).endswith(f"The answer is {answer}.")
    assert facts.answer_sentence(facts.Fact("capital", "Kenya", "Nairobi")) == "The capital of Kenya is Nairobi."


def test_a_count_works_the_problem_out_step_by_step():
    assert arithmetic.count_line("add", 3, 4) == "Count on 4 from 3: 3 is 0, 4 is 1, 5 is 2, 6 is 3, 7 is 4."
    assert arithmetic.count_line("sub", 9, 3) == "Count back 3 from 9: 9 is 0, 8 is 1, 7 is 2, 6 is 3."
    assert arithmetic.count_line("mul", 3, 5) == "Count 3 bags of 5: 0 is 0, 5 is 1, 10 is 2, 15 is 3."
    rng = random.Random(0)
    for op, pairs in world.PROBLEM_OPERANDS.items():
        for a, b in pairs:
            question = world.problem_text(rng, op, a, b)
            reply = arithmetic.worked_solution(question, world.apply(op, a, b))
            last = reply.splitlines()[0].rstrip(".").rsplit(", ", 1)[-1].split(": ")[-1]
            assert last.split(" is ")[0] == str(world.apply(op, a, b)), (question, reply)


def test_preference_lengths_cannot_separate_chosen_from_rejected(generated):
    files, extra = generated
    assert 0.4 <= data.length_only_accuracy(files["dpo_train"]) <= 0.6
    assert abs(extra["dpo_train_mean_chosen_chars"] - extra["dpo_train_mean_rejected_chars"]) < 5
    assert set(extra["dpo_train_rejected_kinds"]) == {"terse", "wrong"}
    assert all(p["chosen"] != p["rejected"] for p in files["dpo_train"])


def test_arithmetic_preference_pairs_reject_the_bare_answer_never_a_wrong_one(generated):
    files, _ = generated
    pairs = [p for p in files["dpo_train"] + files["dpo_heldout"] if p["chosen"].startswith("Count")]
    assert len(pairs) > 500
    for pair in pairs:
        answer = rewards.parse_final_answer(pair["chosen"])
        assert answer is not None and rewards.parse_final_answer(pair["rejected"]) == answer, pair
        assert "Count" not in pair["rejected"], pair


def test_sft_and_dpo_arithmetic_shares_follow_their_own_keys():
    config = load_config(REPO / "config.yaml")["posttrain_data"]
    small = {**config, "sft_conversations": 400, "dpo_pairs": 400, "dpo_heldout_pairs": 0, "rl_train_problems": 10,
             "rl_test_problems": 10, "multi_turn_fraction": 0.0, "arithmetic_fraction": 0.9,
             "dpo_arithmetic_fraction": 0.1}
    files, _ = data.build(small, HELD)

    def arithmetic_share(texts):
        return sum(arithmetic.ANSWER_PREFIX in t for t in texts) / len(texts)

    sft = arithmetic_share([c["messages"][-1]["content"] for c in files["sft_train"]])
    dpo = arithmetic_share([pair["chosen"] for pair in files["dpo_train"]])
    assert 0.8 < sft < 0.97 and 0.04 < dpo < 0.17, (sft, dpo)


def test_gsm8k_answers_parse():
    assert arithmetic.final_answer_from_gsm8k("She has 3 + 4 = 7.\n#### 1,234") == "1234"
    assert arithmetic.final_answer_from_gsm8k("42") == "42"
    assert arithmetic.final_answer_from_gsm8k(-7) == "-7"
    assert arithmetic.final_answer_from_gsm8k("#### about seven") is None


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "reader, lines, message",
    [
        (
            formats.read_sft,
            ['{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}', "{oops"],
            ":2: not valid JSON",
        ),
        (formats.read_sft, ['{"conversation": []}'], ":1: missing key"),
        (formats.read_sft, ['{"messages": [{"role": "robot", "content": "x"}]}'], ":1: message 0: role 'robot'"),
        (formats.read_sft, ['{"messages": []}'], ":1: messages must be a non-empty list"),
        (formats.read_sft, ['{"messages": [{"role": "user", "content": "x"}]}'], ":1: no assistant message"),
        (formats.read_preferences, ['{"prompt": "q", "chosen": "a"}'], ":1: missing key(s) ['rejected']"),
        (formats.read_preferences, ['{"prompt": "q", "chosen": "a", "rejected": 3}'], ":1: 'rejected' must be"),
        (
            formats.read_problems,
            ['{"prompt": "q", "answer": "7"}', "", '{"prompt": "q", "answer": "seven"}'],
            ":3: 'answer' 'seven' is not a number",
        ),
    ],
)
def test_malformed_user_lines_name_file_and_line(tmp_path, reader, lines, message):
    path = write(tmp_path / "user.jsonl", lines)
    with pytest.raises(DataFormatError) as err:
        reader(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_user_files_replace_generated_ones_with_a_heldout_split(tmp_path):
    rl = write(tmp_path / "gsm.jsonl", [
        json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1:,}"})
        for i in range(995, 1015)
    ])
    p = load_config(REPO / "config.yaml")["posttrain_data"] | {"rl_path": str(rl), "heldout_fraction": 0.25}
    files, extra = data.build(p, HELD)
    assert extra["sources"]["rl"] == str(rl) and extra["sources"]["sft"] == "generated"
    assert len(files["rl_test"]) == 5 and len(files["rl_train"]) == 15
    assert {r["answer"] for r in files["rl_train"] + files["rl_test"]} == {str(i + 1) for i in range(995, 1015)}
    assert files == data.build(p, HELD)[0]  # seeded


def planned(workflow_copy, target: str) -> dict[str, int]:
    # the target goes before --quiet, whose values would otherwise swallow it
    proc = workflow_copy.snakemake("-n", target, "--quiet", "rules")
    return parse_job_table(proc.stdout + proc.stderr)


def test_posttrain_data_rule_runs_under_snakemake_and_reruns_on_its_section(workflow_copy):
    target = "results/posttrain_data/stats.json"
    workflow_copy.snakemake(target)
    out = workflow_copy.root / "results" / "posttrain_data"
    assert all((out / f"{name}.jsonl").stat().st_size > 0 for name in data.OUTPUT_FILES)
    assert planned(workflow_copy, target) == {}
    workflow_copy.update("posttrain_data", seed=99)
    assert planned(workflow_copy, target) == {"posttrain_data": 1}
    workflow_copy.update("sft", lr=1.0e-4)  # another section: posttrain_data does not care
    workflow_copy.update("posttrain_data", seed=1234)
    assert planned(workflow_copy, target) == {}
