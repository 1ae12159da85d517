"""Page chrome: nav, cookie banner, ads, sidebars, footer, inline script and style. Its wording
is kept apart from every article's vocabulary, so an extractor's precision can be measured."""
from __future__ import annotations

import html
import random
import re

from llmpipe.data.toyweb.pages import Doc, Page, Site, pick

SITES = {
    "countries": (Site("Atlas Notes", "atlas-notes.example", "world", "semantic"),
                  Site("Wanderlust Journal", "www.wanderlust-journal.example", "destinations", "divs")),
    "animals": (Site("Wild Facts Daily", "wild-facts-daily.example", "animals", "semantic"),
                Site("Nature Corner", "www.nature-corner.example", "creatures", "divs")),
    "stories": (Site("Storytime Blog", "storytime-blog.example", "tales", "divs"),
                Site("Bedtime Tales", "www.bedtime-tales.example", "stories", "semantic")),
    "recipes": (Site("Kitchen Corner", "kitchen-corner.example", "recipes", "semantic"),
                Site("Home Cooking Club", "www.home-cooking-club.example", "dishes", "divs")),
    "arithmetic": (Site("Maths Practice Hub", "maths-practice-hub.example", "worksheets", "divs"),
                   Site("School Worksheets", "www.school-worksheets.example", "maths", "semantic")),
    "qa": (Site("Ask Around Forum", "ask-around-forum.example", "thread", "forum"),
           Site("Homework Helpers", "www.homework-helpers.example", "questions", "forum")),
}
AGGREGATORS = (Site("Content Roundup", "content-roundup.example", "read", "divs"),
               Site("Daily Reader Digest", "www.daily-reader-digest.example", "article", "semantic"))
MIRRORS = ("mirror-archive.example", "www.web-cache-copy.example")
FOREIGN_SITES = {"de": Site("Reiseblog", "www.reiseblog-sonne.example", "berichte", "semantic"),
                 "fr": Site("Carnet de voyage", "carnet-voyage.example", "recits", "divs"),
                 "es": Site("Diario viajero", "www.diario-viajero.example", "paseos", "semantic")}
SPAM_SITES = (Site("Deal Finder Pro", "deal-finder-pro.example", "offer", "divs"),
              Site("Super Savings Now", "www.super-savings-now.example", "promo", "semantic"))
LINK_FARM_SITE = Site("Link Directory Central", "link-directory-central.example", "dir", "divs")

NAV = ("Home", "Latest", "Topics", "Newsletter", "Shop", "About us", "Contact")
COOKIE_NOTICES = (
    "We use cookies to personalise content and ads and to analyse our traffic.",
    "This website uses cookies. By continuing to browse you agree to our use of cookies.",
    "Cookies help us deliver our services. Manage your consent preferences at any time.",
)
ADS = ("Sponsored: Save up to 50% on premium noise-cancelling headphones this weekend only.",
       "Advertisement: Compare mortgage rates from top lenders in under two minutes.",
       "Sponsored: Upgrade your smartphone plan with unlimited gigabytes today.",
       "Advertisement: Discover luxury spa resorts with exclusive member pricing.")
RELATED = ("Ten gadgets under twenty dollars", "Our editors' weekly picks", "Newsletter archive",
           "Five productivity apps reviewed", "Subscriber exclusive offers", "Podcast episode list",
           "Reader survey results", "Gift cards and vouchers", "Trending hashtags this month",
           "Meet the editorial team", "Advertise with us", "Download our mobile app")
SHARE = "Share on Facebook | Share on Twitter | Pin it | Email this"
CSS = ("body{font-family:Georgia,serif;margin:0;color:#222}nav ul{list-style:none;display:flex}"
       ".cookie-banner{position:fixed;bottom:0;background:#333;color:#fff}.ad-slot{border:1px solid #ddd}")
SCRIPT = ("window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments);}"
          "gtag('js',new Date());gtag('config','UA-000000-1');")
USERS = ("quizmaster77", "Helen_K", "geo_dad", "travelbug", "MrsPatel", "owl_lover", "teacher_tom",
         "curious_cat", "mapnerd", "kiwi_jo")


def chrome(site: Site, rng: random.Random) -> dict[str, str]:
    """The HTML pieces around the main text (the same calls for every layout)."""
    nav = "".join(f'<li><a href="/{n.lower().replace(" ", "-")}/">{n}</a></li>' for n in NAV)
    related = "".join(f'<li><a href="/r/{i}">{t}</a></li>' for i, t in enumerate(pick(rng, RELATED, 5)))
    return {
        "head": (f'<style>{CSS}</style>\n<script>{SCRIPT}</script>'),
        "cookie": (f'<div class="cookie-banner" id="cookie-consent"><p>{rng.choice(COOKIE_NOTICES)}</p>'
                   '<button>Accept all</button> <button>Manage settings</button></div>'),
        "nav": f'<nav class="main-nav"><ul>{nav}</ul></nav>',
        "ad": (f'<div class="ad-slot advert"><a href="https://ads.adnetwork.example/c?{rng.randint(1, 10**6)}">'
               f'{rng.choice(ADS)}</a></div>'),
        "sidebar": f'<h3>Related links</h3><ul>{related}</ul><p>Subscribe to our newsletter for weekly updates.</p>',
        "footer": (f'<p>&copy; 2024 {site.name}. All rights reserved.</p>'
                   '<p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a>'
                   ' | <a href="/contact">Contact</a></p>'),
        "tail": '<script>document.querySelectorAll(".advert").forEach(function(e){e.dataset.seen=1});</script>',
    }


def esc(text: str) -> str:
    return html.escape(text, quote=False)


def render(site: Site, doc: Doc | None, rng: random.Random, meta_charset: str = "utf-8") -> str:
    """A whole HTML page: ``doc`` (title and paragraphs) inside ``site``'s chrome.

    ``doc=None`` gives a boilerplate-only page (a search page with no results)."""
    c = chrome(site, rng)
    title = doc.title if doc else "Search"
    paras = "\n".join(f"<p>{esc(p)}</p>" for p in doc.paragraphs) if doc else ""
    if doc is None:
        body = '<form action="/search"><input name="q"> <button>Search</button></form>'
    elif site.layout == "forum":
        body = "\n".join(
            f'<div class="post"><div class="post-author">{rng.choice(USERS)} &middot; '
            f'{rng.randint(1, 28)} May 2024</div>'
            f'<div class="post-body"><p>{esc(p)}</p></div>'
            '<div class="post-actions">Reply | Quote | Report</div></div>'
            for p in doc.paragraphs)
        body = f'<h1>{esc(doc.title)}</h1>\n<div class="thread">\n{body}\n</div>'
    elif site.layout == "semantic":
        body = f'<article>\n<h1>{esc(doc.title)}</h1>\n{paras}\n</article>'
    else:
        body = (f'<div class="post"><h2 class="post-title">{esc(doc.title)}</h2>\n'
                f'<div class="entry-content">\n{paras}\n</div>'
                f'<div class="share-buttons">{SHARE}</div></div>')
    if site.layout == "divs":
        page = (f'<div class="wrapper"><div class="topbar"><a class="logo" href="/">{site.name}</a>{c["nav"]}</div>\n'
                f'{c["ad"]}\n<div id="content">\n{body}\n</div>\n'
                f'<div id="sidebar" class="widget-area">{c["sidebar"]}</div>\n'
                f'<div id="footer">{c["footer"]}</div></div>')
    else:
        page = (f'<header><a class="logo" href="/">{site.name}</a>{c["nav"]}</header>\n{c["ad"]}\n'
                f'<main>\n{body}\n<aside class="sidebar">{c["sidebar"]}</aside>\n</main>\n'
                f'<footer>{c["footer"]}</footer>')
    lang = doc.language if doc else "en"
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="{meta_charset}">\n'
            f'<title>{esc(title)} | {site.name}</title>\n{c["head"]}\n</head>\n<body>\n{c["cookie"]}\n'
            f'{page}\n{c["tail"]}\n</body></html>\n')


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def page_url(site: Site, doc: Doc | None, n: int) -> str:
    name = slug(doc.title) if doc else "search"
    if site.layout == "forum":
        return f"https://{site.domain}/{site.section}/{n}/{name}"
    return f"https://{site.domain}/{site.section}/{name}-{n}.html"


def html_page(url: str, kind: str, site: Site, doc: Doc | None, rng: random.Random, **truth) -> Page:
    """A UTF-8 HTML page, declared in the HTTP header (mostly) or only in its <meta>."""
    header = rng.choice(("text/html; charset=utf-8", "text/html; charset=UTF-8", "text/html"))
    return Page(url, kind, render(site, doc, rng).encode("utf-8"), header, doc, charset_true="utf-8", **truth)
