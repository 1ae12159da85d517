"""Quality stage: language id, C4 line cleaning, Gopher and FineWeb document rules, PII masking.

Each rule family follows datatrove's filter of the same name, with every threshold in config.
"""
from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from dataclasses import dataclass, field

import regex

from llmpipe.config import ConfigError, stage_params
from llmpipe.data.stage import Drop, add_shard_arguments, run_shard

SECTION = "quality"

# C4 (datatrove C4QualityFilter); the curly quotes are the typographic forms of '"' and "'".
C4_END_PUNCTUATION = (".", "?", "!", '"', "'", "\u201d", "\u2019")
C4_CITATION = regex.compile(r"\[\d*]|\[edit]|\[citation needed]")
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies",
             "use of cookies", "use cookies")
C4_DOCUMENT_RULES = frozenset({"lorem_ipsum", "curly_bracket"})  # these drop the whole page
# A sentence ends at a run of . ! ? (closing quotes/brackets allowed) before a space or the end.
SENTENCE_END = regex.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s|$)")

# FineWeb (datatrove FineWebQualityFilter stop_chars).
FINEWEB_END_PUNCTUATION = (".", "'", '"', "!", "?")

# Gopher: a "word" is a whitespace token; these are trimmed off its ends to measure it, and a
# token of nothing else is a symbol, not a word (datatrove drops punctuation tokens).
WORD_EDGE_PUNCTUATION = (
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"  # ASCII punctuation (string.punctuation)
    "\u2018\u2019\u201c\u201d\u00ab\u00bb\u2026\u2013\u2014\u2022\u00b7"
)
BULLETS = ("\u2022", "\u2023", "\u25e6", "\u25aa", "\u00b7", "-", "*")
ELLIPSES = ("...", "\u2026")
LETTER = regex.compile(r"\p{L}")
PARAGRAPH_BREAK = regex.compile(r"\n{2,}")

# PII. Possessive runs and a look-behind keep the scans linear on long tokens without "@".
EMAIL = regex.compile(
    r"(?<![\w.%+-])[\w.%+-]++@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\b"
)
IPV4 = regex.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\w|\.\d)"
)
IPV6 = regex.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


@dataclass
class Verdict:
    """What the rules decided for one text, and the counts the stage reports in stats extra."""

    text: str | None = None  # the cleaned, masked text when kept
    reason: str | None = None  # the drop reason when dropped
    counts: Counter = field(default_factory=Counter)  # (group, key) -> n


@dataclass(frozen=True)
class TextStats:
    """The pieces several rules measure, split once per (cleaned) document."""

    text: str
    lines: list[str]  # stripped, non-empty
    paragraphs: list[str]
    words: list[str]  # whitespace tokens
    content_words: list[str]  # tokens trimmed of edge punctuation; symbol-only tokens left out

    @classmethod
    def of(cls, text: str) -> TextStats:
        words = text.split()
        trimmed = (w.strip(WORD_EDGE_PUNCTUATION) for w in words)
        return cls(
            text=text,
            lines=[line for line in (raw.strip() for raw in text.split("\n")) if line],
            paragraphs=PARAGRAPH_BREAK.split(text.strip()),
            words=words,
            content_words=[w for w in trimmed if w],
        )


# ---------------------------------------------------------------- language identification


@functools.lru_cache(maxsize=1)
def language_identifier():
    """py3langid's model, shipped in its wheel; loaded once per process (~0.7 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def check_languages(languages: list[str]) -> None:
    known = set(language_identifier().labels)
    unknown = sorted(set(languages) - known)
    if unknown:
        raise ConfigError(f"config key 'quality.languages': unknown language code(s) {unknown}")


def identify_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's most likely language."""
    lang, score = language_identifier().classify(text)
    return lang, float(score)


# ---------------------------------------------------------------- C4 line rules


def c4_line_verdict(line: str, p: dict) -> tuple[str, str | None]:
    """(line after citation removal, why it is removed or None); datatrove's order of checks."""
    words = line.split()
    if p["max_word_length"] > 0 and any(len(w) > p["max_word_length"] for w in words):
        return line, "too_long_word"
    if p["remove_citations"]:
        line = C4_CITATION.sub("", line)
    if p["filter_no_terminal_punct"] and (
        not line.endswith(C4_END_PUNCTUATION) or line.endswith(ELLIPSES)
    ):
        return line, "no_terminal_punct"
    if len(words) < p["min_words_per_line"]:
        return line, "too_few_words"
    lower = line.lower()
    if p["filter_lorem_ipsum"] and "lorem ipsum" in lower:
        return line, "lorem_ipsum"
    if p["filter_javascript"] and "javascript" in lower:
        return line, "javascript"
    if p["filter_curly_bracket"] and "{" in line:
        return line, "curly_bracket"
    if p["filter_policy"] and any(phrase in lower for phrase in C4_POLICY):
        return line, "policy"
    return line, None


def c4_clean(text: str, p: dict, counts: Counter) -> str | Drop:
    """Remove the lines C4 rejects (counted per rule); drop the document on a document rule."""
    kept, sentences = [], 0
    for raw in text.splitlines():
        if not raw.strip():
            continue
        counts["c4_lines", "total"] += 1
        line, why = c4_line_verdict(raw.strip(), p)
        if why in C4_DOCUMENT_RULES:
            return Drop(f"c4_{why}")
        if why is not None:
            counts["c4_lines_removed", why] += 1
            continue
        kept.append(line)
        sentences += max(1, len(SENTENCE_END.findall(line)))
    if sentences < p["min_num_sentences"]:
        return Drop("c4_too_few_sentences")
    return "\n".join(kept).strip()


# ---------------------------------------------------------------- Gopher quality rules


def gopher_quality(doc: TextStats, p: dict) -> str | None:
    """The MassiveText quality rules (datatrove GopherQualityFilter); the reason, or None."""
    words = doc.content_words
    n = len(words)
    if n < max(p["min_doc_words"], 1):
        return "gopher_short_doc"
    if n > p["max_doc_words"]:
        return "gopher_long_doc"
    mean_length = sum(map(len, words)) / n
    if mean_length < p["min_avg_word_length"]:
        return "gopher_below_avg_word_length"
    if mean_length > p["max_avg_word_length"]:
        return "gopher_above_avg_word_length"
    if doc.text.count("#") / n > p["max_symbol_word_ratio"]:
        return "gopher_too_many_hashes"
    if sum(doc.text.count(e) for e in ELLIPSES) / n > p["max_symbol_word_ratio"]:
        return "gopher_too_many_ellipsis"
    n_lines = len(doc.lines)
    if sum(line.startswith(BULLETS) for line in doc.lines) / n_lines > p["max_bullet_lines_ratio"]:
        return "gopher_too_many_bullets"
    if sum(line.endswith(ELLIPSES) for line in doc.lines) / n_lines > p["max_ellipsis_lines_ratio"]:
        return "gopher_too_many_end_ellipsis"
    if sum(1 for w in words if LETTER.search(w)) / n < p["min_alpha_words_ratio"]:
        return "gopher_below_alpha_words"
    stop_words = frozenset(p["stop_words"])
    if sum(1 for w in words if w.lower() in stop_words) < p["min_stop_words"]:
        return "gopher_few_stop_words"
    return None


# ---------------------------------------------------------------- Gopher repetition rules


def duplicates(items: list[str]) -> tuple[int, int]:
    """(count, characters) of the items that repeat an earlier item."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n))))


def gram_chars(gram: tuple[str, ...]) -> int:
    """Characters of an n-gram written with single spaces."""
    return sum(map(len, gram)) + len(gram) - 1


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram (its length times its count)."""
    counts = Counter(ngrams(words, n))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return gram_chars(gram) * count


def duplicate_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams seen before, skipping past each repeat (datatrove's
    find_all_duplicate), so overlapping repeats are not counted twice."""
    grams = ngrams(words, n)
    if len(set(grams)) == len(grams):  # the common case, decided at C speed
        return 0
    seen: set[tuple[str, ...]] = set()
    chars, i = 0, 0
    while i < len(grams):
        gram = grams[i]
        if gram in seen:
            chars += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def gopher_repetition(doc: TextStats, p: dict) -> str | None:
    """The MassiveText repetition rules (datatrove GopherRepetitionFilter); the reason, or None."""
    size = len(doc.text)
    count, chars = duplicates(doc.paragraphs)
    if count / len(doc.paragraphs) > p["dup_para_frac"]:
        return "gopher_repetition_dup_para_frac"
    if chars / size > p["dup_para_char_frac"]:
        return "gopher_repetition_dup_para_chars"
    count, chars = duplicates(doc.lines)
    if count / len(doc.lines) > p["dup_line_frac"]:
        return "gopher_repetition_dup_line_frac"
    if chars / size > p["dup_line_char_frac"]:
        return "gopher_repetition_dup_line_chars"
    for n, limit in p["top_n_grams"]:
        if top_ngram_chars(doc.words, n) / size > limit:
            return f"gopher_repetition_top_{n}gram"
    for n, limit in p["dup_n_grams"]:
        if duplicate_ngram_chars(doc.words, n) / size > limit:
            return f"gopher_repetition_dup_{n}gram"
    return None


# ---------------------------------------------------------------- FineWeb rules


def fineweb(doc: TextStats, p: dict) -> str | None:
    """FineWeb's line rules (datatrove FineWebQualityFilter); the reason, or None."""
    lines = doc.lines
    punct = sum(line.endswith(FINEWEB_END_PUNCTUATION) for line in lines) / len(lines)
    if punct < p["line_punct_thr"]:
        return "fineweb_line_punct"
    short = sum(len(line) <= p["short_line_length"] for line in lines) / len(lines)
    if short > p["short_line_thr"]:
        return "fineweb_short_lines"
    dup_chars = duplicates(lines)[1]
    if dup_chars / max(len(doc.text) - doc.text.count("\n"), 1) > p["char_duplicates_ratio"]:
        return "fineweb_char_dup"
    if doc.text.count("\n") / len(doc.words) > p["new_line_ratio"]:
        return "fineweb_list_ratio"
    return None


# ---------------------------------------------------------------- PII masking


def is_public_ip(candidate: str) -> bool:
    try:
        return ipaddress.ip_address(candidate).is_global
    except ValueError:
        return False


def mask(pattern: regex.Pattern, text: str, placeholder: str, kind: str, counts: Counter) -> str:
    """Replace the pattern's matches with ``placeholder``, counting them; IP matches that are
    not public addresses (private, loopback, documentation) are left alone."""

    def replace(match: regex.Match) -> str:
        found = match.group()
        if found == placeholder or (kind != "email" and not is_public_ip(found)):
            return found
        counts["pii_masked", kind] += 1
        return placeholder

    return pattern.sub(replace, text)


def mask_pii(text: str, p: dict, counts: Counter) -> str:
    """E-mail addresses and public IPv4/IPv6 addresses -> fixed placeholders."""
    if p["email"] and "@" in text:
        text = mask(EMAIL, text, p["email_placeholder"], "email", counts)
    if p["ip"]:
        text = mask(IPV4, text, p["ipv4_placeholder"], "ipv4", counts)
        if "::" in text or text.count(":") >= 7:  # a cheap test: IPv6 needs "::" or 7 colons
            text = mask(IPV6, text, p["ipv6_placeholder"], "ipv6", counts)
    return text


# ---------------------------------------------------------------- the stage


DOCUMENT_RULES = (
    ("gopher_quality", gopher_quality),
    ("gopher_repetition", gopher_repetition),
    ("fineweb", fineweb),
)


def assess(text: str, p: dict) -> Verdict:
    """Run every enabled rule family on one text, in order: language, C4 lines, document
    rules on the cleaned text, then PII masking of what is kept."""
    verdict = Verdict()
    if not text.strip():
        verdict.reason = "empty"
        return verdict
    if p["languages"]:
        lang, score = identify_language(text)
        verdict.counts["languages", lang] += 1
        if lang not in p["languages"]:
            verdict.reason = "language"
            return verdict
        if score < p["language_min_score"]:
            verdict.reason = "language_low_score"
            return verdict
    if p["c4"]["enabled"]:
        cleaned = c4_clean(text, p["c4"], verdict.counts)
        if isinstance(cleaned, Drop):
            verdict.reason = cleaned.reason
            return verdict
        text = cleaned
        if not text:
            verdict.reason = "empty_after_c4"
            return verdict
    stats = TextStats.of(text)
    for family, rule in DOCUMENT_RULES:
        if p[family]["enabled"]:
            verdict.reason = rule(stats, p[family])
            if verdict.reason is not None:
                return verdict
    if p["pii"]["enabled"]:
        text = mask_pii(text, p["pii"], verdict.counts)
    verdict.text = text
    return verdict


class QualityStep:
    """The run_shard step (assess each document) plus the counts it hands to stats extra."""

    def __init__(self, params: dict):
        if params["languages"]:
            check_languages(params["languages"])
        self.params = params
        self.counts: Counter = Counter()

    def __call__(self, doc: dict) -> dict | Drop:
        verdict = assess(doc.get("text") or "", self.params)
        self.counts.update(verdict.counts)
        if verdict.reason is not None:
            return Drop(verdict.reason)
        return {**doc, "text": verdict.text}

    def extra(self) -> dict[str, dict[str, int]]:
        """The counts as {group: {key: n}}, keys sorted."""
        groups: dict[str, dict[str, int]] = {}
        for (group, key), n in sorted(self.counts.items()):
            groups.setdefault(group, {})[key] = n
        return groups


def add_arguments(parser, stage: str) -> None:
    add_shard_arguments(parser, "TEXT Parquet shard (from extract)", "kept documents (TEXT Parquet)")


def run(args, stage: str) -> int:
    step = QualityStep(stage_params(args.params, args.config, SECTION))
    stats = run_shard(
        SECTION, step, args.input, args.output, args.stats,
        rejects_path=args.rejects, extra=step.extra,
    )
    print(f"quality: kept {stats.docs_out}/{stats.docs_in}, removed {dict(stats.removed)}")
    return 0
