"""What a toy-web page is: the site it is on, its true content (``Doc``) and the response
record to write (``Page``); and the phrase helpers every writer uses."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    name: str
    domain: str
    section: str
    layout: str  # semantic | divs | forum


@dataclass(frozen=True)
class Doc:
    """A page's true content, before chrome: what an ideal extractor returns."""

    title: str
    paragraphs: tuple[str, ...]
    genre: str | None = None
    language: str = "en"


@dataclass(frozen=True)
class Page:
    """One response record to write, with everything the truth table says about it."""

    url: str
    kind: str
    body: bytes
    content_type: str | None
    doc: Doc | None = None
    blocked_category: str | None = None
    charset_true: str | None = None
    duplicate_of: str | None = None
    special: str | None = None


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def pick(rng: random.Random, pool: tuple[str, ...] | list[str], k: int) -> list[str]:
    return rng.sample(list(pool), min(k, len(pool)))
