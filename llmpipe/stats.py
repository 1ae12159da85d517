"""The one stats writer: every stage counts what it read, kept and dropped (by reason).

Modelled on datatrove's step statistics: documents and bytes in and out, removals by
reason, wall time, plus free-form ``extra`` numbers a stage wants the report to show.

The data stages also report their peak memory (``record_peak_rss`` -> ``extra.peak_rss_mb``).
It is not in every stage's ``to_dict``: a pack header embeds its stats and pretraining hashes
that header into the run fingerprint that a checkpoint must match, so a number that changes
from run to run must stay out of it.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from llmpipe.io import write_json


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's own memory.
    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there: a process started by a large one
    (Snakemake, pytest) inherits its parent's peak into ``ru_maxrss`` across fork/exec, while
    ``VmHWM`` starts afresh at exec. Elsewhere ``ru_maxrss`` (KiB, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource  # POSIX only: imported where it is needed

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


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

    def record_peak_rss(self) -> None:
        """Put the process's peak memory so far into ``extra.peak_rss_mb`` (call it last)."""
        self.extra["peak_rss_mb"] = peak_rss_mb()

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
