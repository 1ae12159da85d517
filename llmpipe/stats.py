"""The one stats writer: every stage counts what it read, kept and dropped (by reason).

Modelled on datatrove's step statistics: documents and bytes in and out, removals by
reason, wall time, plus free-form ``extra`` numbers a stage wants the report to show.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from llmpipe.io import write_json


@dataclass
class StageStats:
    stage: str
    shard: str | None = None
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    removed: Counter = field(default_factory=Counter)
    removed_bytes: Counter = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def read(self, nbytes: int = 0) -> None:
        self.docs_in += 1
        self.bytes_in += nbytes

    def kept(self, nbytes: int = 0) -> None:
        self.docs_out += 1
        self.bytes_out += nbytes

    def dropped(self, reason: str, nbytes: int = 0) -> None:
        self.removed[reason] += 1
        self.removed_bytes[reason] += nbytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "shard": self.shard,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "removed": dict(sorted(self.removed.items())),
            "removed_bytes": dict(sorted(self.removed_bytes.items())),
            "wall_seconds": round(time.perf_counter() - self.started, 4),
            "extra": self.extra,
        }

    def write(self, path: str | os.PathLike) -> dict[str, Any]:
        data = self.to_dict()
        write_json(path, data)
        return data
