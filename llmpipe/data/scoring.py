"""Score data stages against the toy web's truth.parquet: URL/binary removal, extraction, dedup.
Pure functions over pandas frames, plus ``read_stage`` to load a results directory's shards."""
from __future__ import annotations

import glob
import os
import re
from collections import Counter

import pandas as pd

WORD = re.compile(r"\w+")
REMOVAL_TARGETS = ("blocked_domain", "binary")
COPY_KINDS = ("exact_copy", "near_copy")


def read_stage(results_dir: str | os.PathLike, stage: str, part: str, columns: list[str]) -> pd.DataFrame:
    """All shards of ``results/<stage>/<part>/*.parquet`` (only ``columns``) as one frame;
    an empty frame with those columns when the stage has not run."""
    paths = sorted(glob.glob(os.path.join(os.fspath(results_dir), stage, part, "*.parquet")))
    if not paths:
        return pd.DataFrame(columns=columns)
    return pd.concat([pd.read_parquet(p, columns=columns) for p in paths], ignore_index=True)


def ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


# ---------------------------------------------------------------------------------------------
# URL and binary removal (ingest + url_filter)


def removal_scores(truth: pd.DataFrame, ingested_ids: set[str], url_rejected_ids: set[str]) -> dict:
    """Precision and recall of removing blocked-domain and binary records.

    A record is removed by ingest when it is missing from ingest's output, and by url_filter
    when it is in its rejects. The truncated record is left out: ingest rightly skips it, but
    for being cut off, not for its URL or type (``truncated_removed`` says whether it was).
    """
    scored = truth[truth["kind"] != "truncated"]
    target = scored["kind"].isin(REMOVAL_TARGETS)
    by_ingest = ~scored["id"].isin(ingested_ids)
    by_url = scored["id"].isin(url_rejected_ids)
    removed = by_ingest | by_url
    hits = int((removed & target).sum())
    cut = truth.loc[truth["kind"] == "truncated", "id"]
    return {
        "targets": int(target.sum()),
        "removed": int(removed.sum()),
        "removed_by_ingest": int(by_ingest.sum()),
        "removed_by_url_filter": int((by_url & ~by_ingest).sum()),
        "precision": ratio(hits, int(removed.sum())),
        "recall": ratio(hits, int(target.sum())),
        "recall_by_kind": {k: ratio(int((removed & (scored["kind"] == k)).sum()), int((scored["kind"] == k).sum()))
                           for k in REMOVAL_TARGETS},
        "missed": sorted(scored.loc[target & ~removed, "url"])[:10],
        "wrongly_removed": sorted(scored.loc[removed & ~target, "url"])[:10],
        "truncated_removed": bool(len(cut)) and not cut.isin(ingested_ids).any(),
    }


# ---------------------------------------------------------------------------------------------
# Extraction


def word_counts(text: str | None) -> Counter:
    return Counter(WORD.findall((text or "").lower()))


def text_scores(true_text: str, title: str | None, extracted: str) -> tuple[float, float, int]:
    """(recall, chrome fraction, extracted words) of one page, on word multisets.

    Recall: the share of the true main text's words that the extraction holds. Chrome: the
    share of extracted words that are neither main text nor the page title (the title is
    content, and extractors differ on whether they repeat it in the text)."""
    truth, got = word_counts(true_text), word_counts(extracted)
    allowed = truth + word_counts(title)
    n_true, n_got = sum(truth.values()), sum(got.values())
    recalled = sum((truth & got).values())
    content = sum((allowed & got).values())
    recall = recalled / n_true if n_true else 1.0
    chrome = (n_got - content) / n_got if n_got else 0.0
    return recall, chrome, n_got


def extraction_table(truth: pd.DataFrame, extracted: pd.DataFrame) -> pd.DataFrame:
    """One row per clean article: recall and chrome fraction of its extracted text.

    Articles absent from ``extracted`` (columns id, text) were lost by extraction or earlier:
    recall 0, ``missing`` True."""
    articles = truth[truth["kind"] == "article"]
    texts = dict(zip(extracted["id"], extracted["text"]))
    rows = []
    for row in articles.itertuples(index=False):
        got = texts.get(row.id)
        recall, chrome, n_got = text_scores(row.main_text, row.title, got or "")
        rows.append({"id": row.id, "url": row.url, "genre": row.genre, "special": row.special,
                     "recall": recall, "chrome": chrome, "extracted_words": n_got,
                     "missing": got is None})
    return pd.DataFrame(rows, columns=["id", "url", "genre", "special", "recall", "chrome",
                                       "extracted_words", "missing"])


def extraction_scores(table: pd.DataFrame, min_recall: float = 0.95, max_chrome: float = 0.05) -> dict:
    """Summary of ``extraction_table``: means, and the share of articles meeting each goal."""
    n = len(table)
    if not n:
        return {"articles": 0}
    present = table[~table["missing"]]
    return {
        "articles": n,
        "missing": int(table["missing"].sum()),
        "mean_recall": float(table["recall"].mean()),
        "mean_chrome": float(present["chrome"].mean()) if len(present) else None,
        "share_recall_ok": float((table["recall"] >= min_recall).mean()),
        "share_chrome_ok": float((present["chrome"] <= max_chrome).mean()) if len(present) else None,
        "by_genre": {g: {"recall": float(t["recall"].mean()), "chrome": float(t["chrome"].mean())}
                     for g, t in table.groupby("genre")},
        "worst_recall": table.nsmallest(5, "recall")[["url", "recall"]].to_dict("records"),
        "worst_chrome": present.nlargest(5, "chrome")[["url", "chrome"]].to_dict("records"),
    }


# ---------------------------------------------------------------------------------------------
# Dedup


def planted_pairs(truth: pd.DataFrame) -> pd.DataFrame:
    """(copy_id, original_id, kind) for every planted exact and near copy."""
    id_of = dict(zip(truth["url"], truth["id"]))
    copies = truth[truth["kind"].isin(COPY_KINDS)]
    return pd.DataFrame({"copy_id": copies["id"].to_numpy(),
                         "original_id": copies["duplicate_of"].map(id_of).to_numpy(),
                         "kind": copies["kind"].to_numpy()})


def dedup_scores(truth: pd.DataFrame, kept_ids: set[str], removed_ids: set[str]) -> dict:
    """Recall and precision of finding the planted copies.

    ``kept_ids``/``removed_ids``: dedup's output and rejects; together they are its input.
    A pair counts when both pages reached dedup; it is found when the copy was removed, or
    the original was removed and the copy survived (one deterministic survivor per cluster
    may be either). Precision: the share of removed pages that belong to a planted pair."""
    pairs = planted_pairs(truth)
    seen = kept_ids | removed_ids
    pairs = pairs[pairs["copy_id"].isin(seen) & pairs["original_id"].isin(seen)]
    found = pairs["copy_id"].isin(removed_ids) | pairs["original_id"].isin(removed_ids)
    planted = set(pairs["copy_id"]) | set(pairs["original_id"])
    url_of = dict(zip(truth["id"], truth["url"]))
    return {
        "pairs": len(pairs),
        "found": int(found.sum()),
        "recall": ratio(int(found.sum()), len(pairs)),
        "recall_by_kind": {k: ratio(int(found[pairs["kind"] == k].sum()), int((pairs["kind"] == k).sum()))
                           for k in COPY_KINDS},
        "removed": len(removed_ids),
        "precision": ratio(len(removed_ids & planted), len(removed_ids)),
        "missed": sorted(url_of.get(i, i) for i in pairs.loc[~found, "copy_id"])[:10],
        "wrongly_removed": sorted(url_of.get(i, i) for i in removed_ids - planted)[:10],
    }
