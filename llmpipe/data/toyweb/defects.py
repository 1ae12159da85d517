"""Planted defects: near and exact copies, binaries, blocked domains, wrong charsets and
text oddities (an escaped script, a chat-template token)."""
from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

from llmpipe.data.toyweb.chrome import render
from llmpipe.data.toyweb.pages import Doc, Page, Site

BLOCKLIST_DIR = Path(__file__).resolve().parent.parent / "blocklists"
BLOCKED_CATEGORIES = ("adult", "malware", "spam")


def edit_sentence(sentence: str) -> str:
    """One small wording change, as a copy-editor or a content thief would make (never inside
    a fact's prompt, so copies keep stating facts in the training phrasings)."""
    for old, new in ((" very ", " really "), (" many ", " lots of "), (" small ", " little "),
                     (" often ", " frequently "), (" big ", " large ")):
        if old in sentence:
            return sentence.replace(old, new, 1)
    return sentence.rstrip(".!?") + ", of course."


def near_copy_doc(doc: Doc, rng: random.Random) -> Doc:
    """Two neighbouring paragraphs swapped and one sentence edited."""
    paragraphs = list(doc.paragraphs)
    i = rng.randrange(len(paragraphs))
    sentences = re.split(r"(?<=[.!?]) ", paragraphs[i])
    j = rng.randrange(len(sentences))
    sentences[j] = edit_sentence(sentences[j])
    paragraphs[i] = " ".join(sentences)
    k = rng.randrange(len(paragraphs) - 1)
    paragraphs[k], paragraphs[k + 1] = paragraphs[k + 1], paragraphs[k]
    return replace(doc, paragraphs=tuple(paragraphs))


BINARY_TYPES = (  # content type, extension, leading bytes
    ("image/jpeg", "jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("image/png", "png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
    ("image/gif", "gif", b"GIF89a"),
    ("application/pdf", "pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
    ("application/x-msdownload", "exe", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00"),
    ("application/zip", "zip", b"PK\x03\x04\x14\x00"),
)
BINARY_HOSTS = ("cdn.atlas-notes.example", "files.kitchen-corner.example", "static.nature-corner.example")


def binary_page(rng: random.Random, n: int) -> Page:
    """An image, PDF, archive or executable, recognisable by Content-Type and URL extension,
    or by only one of the two (no extension; or no Content-Type header at all)."""
    content_type, ext, magic = BINARY_TYPES[n % len(BINARY_TYPES)]
    mode = ("both", "type_only", "extension_only")[(n + n // len(BINARY_TYPES)) % 3]  # all 18 pairs
    host = rng.choice(BINARY_HOSTS)
    url = (f"https://{host}/download?file={n}" if mode == "type_only"
           else f"https://{host}/media/{n:05d}.{ext}")
    body = magic + rng.randbytes(rng.randint(300, 3000))
    return Page(url, "binary", body, None if mode == "extension_only" else content_type,
                special=f"binary_{mode}")


def blocked_domains() -> dict[str, list[str]]:
    """Category -> domains, from the shipped blocklists, read at run time."""
    out = {}
    for category in BLOCKED_CATEGORIES:
        lines = (BLOCKLIST_DIR / f"{category}.txt").read_text().splitlines()
        out[category] = [e for e in (line.split("#", 1)[0].strip() for line in lines) if e]
    return out


def charset_page(url: str, site: Site, doc: Doc, rng: random.Random, special: str) -> Page:
    """A page whose declared charset is wrong or split between header and <meta>."""
    if special == "cp1252_as_utf8":  # legacy bytes, declared UTF-8 everywhere
        body, header, true = render(site, doc, rng, "utf-8").encode("cp1252"), "text/html; charset=utf-8", "cp1252"
    elif special == "utf8_header_latin1":  # header says latin-1, the <meta> rightly says UTF-8
        body, header, true = render(site, doc, rng, "utf-8").encode("utf-8"), "text/html; charset=iso-8859-1", "utf-8"
    else:  # "cp1252_declared": legacy bytes, correctly declared
        body, header, true = (render(site, doc, rng, "windows-1252").encode("cp1252"),
                              "text/html; charset=windows-1252", "cp1252")
    return Page(url, "article", body, header, doc, charset_true=true, special=special)


def with_sentence(doc: Doc, sentence: str, rng: random.Random) -> Doc:
    paragraphs = list(doc.paragraphs)
    i = rng.randrange(len(paragraphs))
    paragraphs[i] = f"{paragraphs[i]} {sentence}"
    return replace(doc, paragraphs=tuple(paragraphs))


ESCAPED_SCRIPT = ('When a pupil typed <script>alert("x")</script> into the library computer, '
                  "the screen simply showed the words instead of running them.")
SPECIAL_TOKEN = ("The old robot printed the marker <|user|> at the top of every page of its "
                 "notebook, which made the children laugh.")
CHARSET_SPECIALS = ("cp1252_as_utf8", "utf8_header_latin1", "cp1252_declared")
