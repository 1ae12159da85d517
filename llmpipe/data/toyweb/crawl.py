"""The crawl: every page (clean articles, then every other kind), shuffled into files."""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace

from llmpipe.data.toyweb.articles import (
    FOREIGN,
    GENRE_WEIGHTS,
    SUBJECTS,
    WRITERS,
    write_blocked,
    write_foreign,
    write_link_farm,
    write_recipe,
    write_spam,
    write_story,
    write_worksheet,
)
from llmpipe.data.toyweb.chrome import (
    AGGREGATORS,
    FOREIGN_SITES,
    LINK_FARM_SITE,
    MIRRORS,
    SITES,
    SPAM_SITES,
    html_page,
    page_url,
)
from llmpipe.data.toyweb.defects import (
    BLOCKED_CATEGORIES,
    CHARSET_SPECIALS,
    ESCAPED_SCRIPT,
    SPECIAL_TOKEN,
    binary_page,
    blocked_domains,
    charset_page,
    near_copy_doc,
    with_sentence,
)
from llmpipe.data.toyweb.pages import Page, Site
from llmpipe.tasks import world
from llmpipe.tasks.heldout import HeldOut


def counts_for(articles: int) -> dict[str, int]:
    """How many pages of each non-article kind a web of ``articles`` articles gets."""
    def share(fraction: float, minimum: int) -> int:
        return max(minimum, round(fraction * articles))

    return {"spam": share(0.05, 3), "link_farm": share(0.02, 2), "blocked_domain": share(0.04, 6),
            "binary": share(0.04, 6), "exact_copy": share(0.03, 3), "near_copy": share(0.03, 3),
            "boilerplate": share(0.02, 2), "non_english": share(0.02, 3)}


def deal(rng: random.Random, items: tuple) -> Iterator:
    """Items in shuffled rounds, each once per round: every country and animal gets its fair
    share of pages, so every fact is stated about equally often."""
    while True:
        yield from rng.sample(items, len(items))


def make_articles(rng: random.Random, n: int, held: HeldOut) -> list[Page]:
    """``n`` clean articles; the first few carry the planted charset and text oddities.
    Worksheets state only facts of the training share (``held``)."""
    genres, weights = list(GENRE_WEIGHTS), list(GENRE_WEIGHTS.values())
    decks = {genre: deal(rng, items) for genre, items in SUBJECTS.items()}
    accented = [d for d in world.DISHES if not d.name.isascii()]
    pages = []
    for i in range(n):
        special = (*CHARSET_SPECIALS, "escaped_script", "special_token")[i] if i < 5 else None
        genre = rng.choices(genres, weights)[0]
        if special in CHARSET_SPECIALS:  # a recipe with non-ASCII words, so the charset matters
            doc = write_recipe(rng, accented[i % len(accented)])
        elif genre == "arithmetic":
            doc = write_worksheet(rng, held)
        elif genre in decks:
            doc = WRITERS[genre](rng, next(decks[genre]))
        else:
            doc = WRITERS[genre](rng)
        if special == "escaped_script":
            doc = with_sentence(doc, ESCAPED_SCRIPT, rng)
        elif special == "special_token":
            doc = with_sentence(doc, SPECIAL_TOKEN, rng)
        site = rng.choice(SITES[doc.genre])
        url = page_url(site, doc, i)
        if special in CHARSET_SPECIALS:
            pages.append(charset_page(url, site, doc, rng, special))
        else:
            pages.append(html_page(url, "article", site, doc, rng, special=special))
    return pages


def make_others(rng: random.Random, articles: list[Page], counts: dict[str, int]) -> list[Page]:
    """Spam, link farms, blocked domains, binaries, copies, boilerplate and foreign pages."""
    pages: list[Page] = []
    for n in range(counts["spam"]):
        doc = write_spam(rng)
        pages.append(html_page(page_url(SPAM_SITES[n % 2], doc, n), "spam", SPAM_SITES[n % 2], doc, rng))
    for n in range(counts["link_farm"]):
        doc = write_link_farm(rng)
        pages.append(html_page(page_url(LINK_FARM_SITE, doc, n), "link_farm", LINK_FARM_SITE, doc, rng))
    domains = blocked_domains()
    for n in range(counts["blocked_domain"]):
        category = BLOCKED_CATEGORIES[n % len(BLOCKED_CATEGORIES)]
        listed = domains[category]
        domain = listed[n // len(BLOCKED_CATEGORIES) % len(listed)]
        host = ("", "www.", "m.", "promo.")[n % 4] + domain  # subdomains are blocked too
        doc = write_blocked(rng, category)
        site = Site(domain, host, "page", "divs")
        pages.append(html_page(page_url(site, doc, n), "blocked_domain", site, doc, rng,
                               blocked_category=category))
    pages += [binary_page(rng, n) for n in range(counts["binary"])]
    # copies of long, many-paragraph articles: a near copy of a three-line post is a new post
    plain = [p for p in articles if p.special is None and len(p.doc.paragraphs) >= 4
             and len(" ".join(p.doc.paragraphs).split()) >= 180]
    originals = rng.sample(plain, min(len(plain), counts["exact_copy"] + counts["near_copy"]))
    for n, original in enumerate(originals[: counts["exact_copy"]]):
        path = original.url.split("/", 3)[3]
        pages.append(replace(original, url=f"https://{MIRRORS[n % 2]}/{path}", kind="exact_copy",
                             duplicate_of=original.url))
    for n, original in enumerate(originals[counts["exact_copy"]:]):
        doc = near_copy_doc(original.doc, rng)
        site = AGGREGATORS[n % 2]
        pages.append(html_page(page_url(site, doc, n), "near_copy", site, doc, rng,
                               duplicate_of=original.url))
    for n in range(counts["boilerplate"]):
        site = rng.choice(SITES[rng.choice(list(SITES))])
        pages.append(html_page(f"https://{site.domain}/search?page={n}", "boilerplate", site, None, rng))
    languages = list(FOREIGN)
    for n in range(counts["non_english"]):
        language = languages[n % len(languages)]
        doc, site = write_foreign(rng, language), FOREIGN_SITES[language]
        pages.append(html_page(page_url(site, doc, n), "non_english", site, doc, rng))
    return pages


def build_crawl(seed: int, articles: int, files: int, held: HeldOut) -> list[list[Page]]:
    """Every page, shuffled into ``files`` lists; the last page of the first list is the one
    whose record gets cut off (an extra article, so no other kind loses a page)."""
    rng = random.Random(f"toyweb:{seed}")
    clean = make_articles(rng, articles, held)
    pages = clean + make_others(rng, clean, counts_for(articles))
    rng.shuffle(pages)
    crawl = [pages[i::files] for i in range(files)]
    doc = write_story(rng)
    site = rng.choice(SITES["stories"])
    cut = html_page(page_url(site, doc, articles), "truncated", site, doc, rng, special="truncated")
    crawl[0].append(cut)
    return crawl
