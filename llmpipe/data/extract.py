"""Extract: RAW shard (HTML) -> TEXT shard (main text and title), boilerplate removed.

Backend from config: trafilatura (precision) or resiliparse (speed); paragraphs come out as
lines joined by "\\n". Each page gets a time limit so one pathological page cannot stall a shard.
"""
from __future__ import annotations

import contextlib
import html as html_lib
import re
import signal
from collections.abc import Callable, Iterator
from functools import partial

from llmpipe.config import stage_params
from llmpipe.data.documents import TEXT
from llmpipe.data.stage import Drop, Step, add_shard_arguments, run_shard

Backend = Callable[[str, str | None], str]

HEAD_SCAN_CHARS = 65536  # titles live in <head>; never regex a whole multi-MB page for one
TITLE_TAG = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.I | re.S)
META_TAG = re.compile(r"<meta\b[^>]*>", re.I)
ATTRIBUTE = re.compile(r"""([\w:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
SPACES = re.compile(r"\s+")
# Chrome that resiliparse's main-content heuristic keeps inside the page body: ad slots and
# forum/comment action bars ("Reply | Quote | Report"), by their common class/id conventions.
CHROME_SELECTORS = [
    ".ad", ".ads", "[class^='ad-']", "[id^='ad-']", "[class*='advert']", "[id*='advert']",
    "[class*='sponsor']", "[id*='sponsor']", ".actions", "[class*='-actions']",
]


class ExtractTimeout(BaseException):
    """The page ran over its time limit. A BaseException, so that the backends' own broad
    ``except Exception`` clauses cannot swallow it and carry on."""


# ---------------------------------------------------------------------------------------------
# Backends: html (+ url) -> main text


def trafilatura_text(html: str, url: str | None) -> str:
    import trafilatura

    text = trafilatura.extract(
        html,
        url=url,
        output_format="txt",
        favor_precision=True,
        include_comments=False,
        include_tables=True,
        include_images=False,
        include_links=False,
        deduplicate=False,
        with_metadata=False,
    )
    return text or ""


def resiliparse_text(html: str, url: str | None) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(
        html,
        preserve_formatting=True,
        main_content=True,
        list_bullets=False,
        alt_texts=False,
        links=False,
        form_fields=False,
        noscript=False,
        comments=False,
        post_meta=False,  # "author · date" lines of posts are not the text
        skip_elements=CHROME_SELECTORS,
    )


BACKENDS: dict[str, Backend] = {"trafilatura": trafilatura_text, "resiliparse": resiliparse_text}


# ---------------------------------------------------------------------------------------------
# Pure helpers


def clean_lines(text: str) -> str:
    """One paragraph per line: lines stripped, inner whitespace collapsed, empty lines gone."""
    lines = (SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _attributes(tag: str) -> dict[str, str]:
    return {
        m.group(1).lower(): next(g for g in m.groups()[1:] if g is not None)
        for m in ATTRIBUTE.finditer(tag)
    }


def page_title(html: str) -> str:
    """og:title (the article's own title, without " | Site name"), else <title>, else ""."""
    head = html[:HEAD_SCAN_CHARS]
    for tag in META_TAG.findall(head):
        attrs = _attributes(tag)
        if attrs.get("property", attrs.get("name", "")).lower() == "og:title":
            title = SPACES.sub(" ", html_lib.unescape(attrs.get("content", ""))).strip()
            if title:
                return title
    match = TITLE_TAG.search(head)
    return SPACES.sub(" ", html_lib.unescape(match.group(1))).strip() if match else ""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ExtractTimeout in the main thread after ``seconds`` (SIGALRM; Linux/macOS).

    The signal interrupts Python code and sleeps; a backend stuck inside one C call is
    interrupted when that call returns to Python.
    """

    def on_alarm(signum, frame):
        raise ExtractTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------
# The step


def extract_document(doc: dict, backend: Backend, timeout_seconds: float) -> dict | Drop:
    """A RAW document -> a TEXT document, or the reason there is none."""
    html = doc.get("html") or ""
    try:
        with time_limit(timeout_seconds):
            text = clean_lines(backend(html, doc.get("url")))
    except ExtractTimeout:
        return Drop("extract_timeout")
    except Exception:  # a backend's parser error on one page must not end the shard
        return Drop("extract_error")
    if not text:
        return Drop("extract_empty")
    return {
        "id": doc["id"],
        "url": doc["url"],
        "title": page_title(html),
        "text": text,
        "date": doc.get("date"),
        "warc_file": doc.get("warc_file"),
    }


def make_step(params: dict) -> Step:
    """The extraction step configured by the ``extract`` config section."""
    name = params["backend"]
    if name not in BACKENDS:
        raise ValueError(f"config key 'extract.backend': unknown backend {name!r}; use one of {sorted(BACKENDS)}")
    return partial(extract_document, backend=BACKENDS[name], timeout_seconds=float(params["timeout_seconds"]))


def add_arguments(parser, stage: str) -> None:
    add_shard_arguments(parser, "RAW Parquet shard (url_filter output)", "TEXT Parquet shard to write")


def run(args, stage: str) -> int:
    params = stage_params(args.params, args.config, "extract")
    run_shard(
        "extract", make_step(params), args.input, args.output, args.stats,
        rejects_path=args.rejects, output_schema=TEXT,
    )
    return 0
