"""The post-training data formats, read line by line and validated: ``{"messages": [...]}`` (SFT),
``{"prompt", "chosen", "rejected"}`` (preferences), ``{"prompt", "answer"}`` (RL problems).

A malformed line raises ``DataFormatError`` naming the file and line.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from llmpipe.io import iter_jsonl
from llmpipe.tasks.arithmetic import final_answer_from_gsm8k
from llmpipe.tokenizer.chat import check_messages


class DataFormatError(ValueError):
    """A malformed line of a post-training data file; the message starts with ``file:line:``."""


def read_checked(path: str | os.PathLike, check: Callable[[Any], dict]) -> list[dict]:
    """Rows of a JSONL file, each passed through ``check``; blank lines are skipped.

    ``check`` raises ValueError with what is wrong; it is re-raised as DataFormatError naming
    the file and line, as is a line that is not JSON.
    """
    rows = []
    try:
        for lineno, row in iter_jsonl(path):
            try:
                rows.append(check(row))
            except ValueError as err:  # ChatFormatError is one
                raise DataFormatError(f"{path}:{lineno}: {err}") from None
    except DataFormatError:
        raise
    except ValueError as err:  # not JSON: iter_jsonl names the file and line
        raise DataFormatError(str(err)) from None
    return rows


def _object_with(row: Any, required: Iterable[str]) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [key for key in required if key not in row]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    return row


def _text(row: dict, key: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{key}' must be a non-empty string, got {value!r:.60}")
    return value


def check_sft(row: Any) -> dict:
    row = _object_with(row, ["messages"])
    messages = row["messages"]
    check_messages(messages)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant message: nothing to train on")
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


def check_preference(row: Any) -> dict:
    row = _object_with(row, ["prompt", "chosen", "rejected"])
    out = {key: _text(row, key) for key in ("prompt", "chosen", "rejected")}
    if out["chosen"] == out["rejected"]:
        raise ValueError("'chosen' and 'rejected' are identical")
    if row.get("system") is not None:
        out["system"] = _text(row, "system")
    return out


def check_problem(row: Any) -> dict:
    """``{"prompt", "answer"}`` (GSM8K's ``{"question", "answer"}`` too); the answer must state
    an integer, bare or after ``####``."""
    if isinstance(row, dict) and "prompt" not in row and "question" in row:
        row = {**row, "prompt": row["question"]}
    row = _object_with(row, ["prompt", "answer"])
    answer = final_answer_from_gsm8k(row["answer"])
    if answer is None:
        raise ValueError(f"'answer' {row['answer']!r:.60} is not a number (expected e.g. \"42\" or \"... #### 42\")")
    return {"prompt": _text(row, "prompt"), "answer": answer}


def read_sft(path: str | os.PathLike) -> list[dict]:
    """``{"messages": [...]}`` rows; roles system/user/assistant, at least one assistant turn."""
    return read_checked(path, check_sft)


def read_preferences(path: str | os.PathLike) -> list[dict]:
    """``{"prompt", "chosen", "rejected"}`` rows (optional ``system``), all non-empty strings."""
    return read_checked(path, check_preference)


def read_problems(path: str | os.PathLike) -> list[dict]:
    """``{"prompt", "answer"}`` rows with the answer normalised to an integer string."""
    return read_checked(path, check_problem)
