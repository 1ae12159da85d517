"""URL filter: drop documents by URL alone, before any HTML is parsed (datatrove's URLFilter).

Domain blocklists by category, banned / soft-banned URL words, banned sub-words, file
extensions, URL length, IP-address hosts and unparsable URLs; each drop counted by reason.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from llmpipe.config import ConfigError, stage_params
from llmpipe.data.stage import Drop, add_shard_arguments, run_shard

SECTION = "url_filter"
BLOCKLIST_DIR = Path(__file__).resolve().parent / "blocklists"
WEB_SCHEMES = frozenset({"http", "https"})
# Word boundaries in a URL: anything but a letter or digit (in any script).
SEPARATORS = re.compile(r"[\W_]+")
HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
# inet_aton forms a browser accepts as IPv4 ("127.1", "0x7f000001", "2130706433").
NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")


@dataclass(frozen=True)
class UrlRules:
    domains: dict[str, str]  # blocked domain (IDNA, lower case) -> drop reason
    banned_words: frozenset[str]
    soft_banned_words: frozenset[str]
    soft_banned_threshold: int
    banned_subwords: re.Pattern | None  # one alternation: a single scan per URL
    extensions: frozenset[str]
    max_url_length: int
    drop_ip_hosts: bool


def read_list(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(line number, entry) of a list file: one entry a line, ``#`` starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"url_filter: cannot read list file {path}: {err.strerror}") from err
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.append((number, entry))
    return entries


def normalize_host(host: str) -> str | None:
    """Lower-case ASCII (IDNA) form of a host name, or None if it is not a valid name."""
    host = host.strip().rstrip(".").lower()
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = host.split(".")
    if not all(HOST_LABEL.fullmatch(label) for label in labels):
        return None
    return host


def parse_domain_entry(entry: str) -> str | None:
    """A blocklist line's domain; hosts-file lines ("0.0.0.0 ads.example") and "*." allowed."""
    return normalize_host(entry.split()[-1].removeprefix("*.").lstrip("."))


def load_domains(path: str | os.PathLike, reason: str, into: dict[str, str]) -> None:
    """Add a domain list file's entries to ``into``; an earlier list keeps its reason."""
    for number, entry in read_list(path):
        domain = parse_domain_entry(entry)
        if domain is None:
            raise ConfigError(f"url_filter: {path}:{number}: not a domain name: {entry!r}")
        into.setdefault(domain, reason)


def word_entries(params: dict, key: str) -> list[tuple[str, str]]:
    """The shipped list ``<key>.txt`` (if default_word_lists) plus the config's own words."""
    entries = []
    if params["default_word_lists"]:
        path = BLOCKLIST_DIR / f"{key}.txt"
        entries += [(f"{path}:{number}", word) for number, word in read_list(path)]
    entries += [(f"config[{i}]", word) for i, word in enumerate(params[key])]
    return entries


def load_words(params: dict, key: str) -> frozenset[str]:
    """The whole-token words of list ``key``; each must be a single token."""
    words = set()
    for source, word in word_entries(params, key):
        word = word.casefold()
        if SEPARATORS.search(word):
            raise ConfigError(
                f"url_filter.{key}: {source}: {word!r} is not one word; "
                "put phrases in banned_subwords"
            )
        words.add(word)
    return frozenset(words)


def subword_pattern(subwords: list[str]) -> re.Pattern | None:
    """One compiled alternation over the normalized sub-words (longest first)."""
    normalized = {SEPARATORS.sub("", word.casefold()) for word in subwords} - {""}
    if not normalized:
        return None
    return re.compile("|".join(map(re.escape, sorted(normalized, key=lambda w: (-len(w), w)))))


def load_rules(params: dict) -> UrlRules:
    """Everything the filter needs, loaded once per shard from a validated config section."""
    domains: dict[str, str] = {}
    for category in params["blocklist_categories"]:
        load_domains(BLOCKLIST_DIR / f"{category}.txt", f"blocklist:{category}", domains)
    for path in params["blocklist_files"]:
        if not Path(path).is_file():
            raise ConfigError(f"url_filter.blocklist_files: no such file: {path}")
        load_domains(path, "blocklist:user", domains)
    return UrlRules(
        domains=domains,
        banned_words=load_words(params, "banned_words"),
        soft_banned_words=load_words(params, "soft_banned_words"),
        soft_banned_threshold=params["soft_banned_threshold"],
        banned_subwords=subword_pattern([w for _, w in word_entries(params, "banned_subwords")]),
        extensions=frozenset(ext.lower().lstrip(".") for ext in params["blocked_extensions"]),
        max_url_length=params["max_url_length"],
        drop_ip_hosts=params["drop_ip_hosts"],
    )


def is_ip_host(host: str) -> bool:
    """IPv6 literals, dotted IPv4, and the numeric IPv4 forms browsers also resolve."""
    if ":" in host:  # only an IPv6 literal can hold a colon once the port is split off
        return True
    labels = host.split(".")
    return len(labels) <= 4 and all(NUMERIC_LABEL.fullmatch(label) for label in labels)


def blocked_domain(host: str, domains: dict[str, str]) -> str | None:
    """The reason of the listed domain that ``host`` is or is a subdomain of, if any."""
    labels = host.split(".")
    for start in range(len(labels)):
        reason = domains.get(".".join(labels[start:]))
        if reason is not None:
            return reason
    return None


def url_host(url: str) -> str | None:
    """The URL's host (IDNA, lower case, or an IP literal), or None if it is not a web URL."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:  # e.g. an unclosed "[" IPv6 literal, NFKC-invalid netloc
        return None
    if parts.scheme not in WEB_SCHEMES or not host:
        return None
    if ":" in host:
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
        return host
    return normalize_host(host)


def extension(url: str) -> str:
    """The lower-case file extension of the URL's path (query and fragment ignored)."""
    path = unquote(urlsplit(url).path)
    return PurePosixPath(path).suffix.lower().lstrip(".") if not path.endswith("/") else ""


def check_url(url: str | None, rules: UrlRules) -> str | None:
    """Why ``url`` is dropped, or None if it is kept. Checks run cheapest first."""
    if not isinstance(url, str) or not url.strip():
        return "invalid_url"
    if len(url) > rules.max_url_length:
        return "url_too_long"
    host = url_host(url)
    if host is None:
        return "invalid_url"
    if is_ip_host(host):
        if rules.drop_ip_hosts:
            return "ip_host"
    else:
        reason = blocked_domain(host, rules.domains)
        if reason is not None:
            return reason
    if extension(url) in rules.extensions:
        return "extension"
    text = unquote(url).casefold()
    tokens = set(SEPARATORS.split(text))
    if not tokens.isdisjoint(rules.banned_words):
        return "banned_word"
    if len(tokens & rules.soft_banned_words) >= rules.soft_banned_threshold:
        return "soft_banned_words"
    if rules.banned_subwords is not None and rules.banned_subwords.search(
        SEPARATORS.sub("", text)
    ):
        return "banned_subword"
    return None


def filter_doc(doc: dict, rules: UrlRules) -> dict | Drop:
    """The run_shard step: the document unchanged, or Drop(reason)."""
    reason = check_url(doc.get("url"), rules)
    return doc if reason is None else Drop(reason)


def add_arguments(parser, stage: str) -> None:
    add_shard_arguments(parser, "RAW Parquet shard (from ingest)", "kept documents (RAW Parquet)")


def run(args, stage: str) -> int:
    rules = load_rules(stage_params(args.params, args.config, SECTION))
    stats = run_shard(
        SECTION,
        functools.partial(filter_doc, rules=rules),
        args.input,
        args.output,
        args.stats,
        rejects_path=args.rejects,
    )
    print(f"url_filter: kept {stats.docs_out}/{stats.docs_in}, removed {dict(stats.removed)}")
    return 0
