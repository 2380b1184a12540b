"""Type-ahead and "did you mean" from the catalog's own words (plain Python + tantivy, no Django).

The words come from the full-text index (``fulltext``), which the change log already keeps in
step on every machine: its ``words`` field holds each product's title and category words
unstemmed, its ``suggest`` field one term per title opening (first 1..4 words) and category name.
``Vocabulary.from_searcher`` reads both term dictionaries once, with live document counts
(deleted products do not count), into memory; the serving code rebuilds it when the index has
moved on (see ``FullText.generation``).

- ``Vocabulary.correct(text)``: each word that is not a catalog word is replaced by the closest
  catalog word within a Damerau-Levenshtein distance of 2 (1 for words of up to 5 letters), the
  most frequent one among the closest (rapidfuzz computes the distances).
- ``Vocabulary.complete(prefix)``: catalog phrases starting with the prefix, most products first.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field

import tantivy
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

WORDS_FIELD = "words"
SUGGEST_FIELD = "suggest"
TITLE_TAG = "t:"  # suggest terms are "t:<title opening>" or "c:<category name>"
CATEGORY_TAG = "c:"
PHRASE_WORDS = 4  # title openings of 1..PHRASE_WORDS words are suggested
MIN_WORD_TO_CORRECT = 3  # shorter words ("xl", "a") are left as typed
SHORT_WORD = 5  # words of up to this many letters get at most one edit
TOP_PREFIX_CHARS = 2  # prefixes this short have their best completions precomputed
TOP_PER_PREFIX = 16

# tantivy's "default" tokenizer, as the words field is indexed: split on what is not a letter or
# digit, drop tokens over 40 bytes, lower-case.
_WORDS = (
    tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    .filter(tantivy.Filter.remove_long(40))
    .filter(tantivy.Filter.lowercase())
    .build()
)


def words_of(text: str) -> list[str]:
    """``text``'s words as the ``words`` field holds them: 'Navy T-shirt' -> ['navy', 't', 'shirt']."""
    return _WORDS.analyze(text)


def phrase_key(text: str) -> str:
    """How a typed prefix or a phrase is compared: its words, lower-cased, one space apart."""
    return " ".join(words_of(text))


def suggest_terms(title: str, category_name: str) -> list[str]:
    """The ``suggest`` field's terms for one product (raw tokens: one term each)."""
    words = words_of(title)
    terms = [TITLE_TAG + " ".join(words[:n]) for n in range(1, min(len(words), PHRASE_WORDS) + 1)]
    category = phrase_key(category_name)
    if category:
        terms.append(CATEGORY_TAG + category)
    return terms


@dataclass(frozen=True)
class Completion:
    text: str
    kind: str  # "title" | "category" | "query"
    count: int  # products (title, category) or searches (query)


def _max_edits(word: str) -> int:
    return 1 if len(word) <= SHORT_WORD else 2


@dataclass
class Vocabulary:
    """The catalog's words (word -> products containing it) and phrases, in memory."""

    words: dict[str, int] = field(default_factory=dict)
    # (phrase, kind, products), sorted by phrase: a prefix is a contiguous slice
    phrases: list[tuple[str, str, int]] = field(default_factory=list)
    _keys: list[str] = field(default_factory=list, repr=False)
    _by_length: dict[int, list[str]] = field(default_factory=dict, repr=False)
    _top: dict[str, list[Completion]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.phrases.sort()
        self._keys = [p for p, _, _ in self.phrases]
        for word in self.words:
            self._by_length.setdefault(len(word), []).append(word)
        # A one- or two-letter prefix spans a large part of the list: its best completions are
        # ranked once here, so a request never scans thousands of phrases.
        heads: dict[str, list[tuple[int, str, str]]] = {}
        for phrase, kind, count in self.phrases:
            for n in range(1, min(TOP_PREFIX_CHARS, len(phrase)) + 1):
                heap = heads.setdefault(phrase[:n], [])
                item = (count, phrase, kind)
                if len(heap) < TOP_PER_PREFIX:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)
        self._top = {
            prefix: [Completion(p, k, c) for c, p, k in sorted(heap, key=_best_first)]
            for prefix, heap in heads.items()
        }

    @classmethod
    def from_searcher(cls, searcher: tantivy.Searcher) -> Vocabulary:
        """Reads the ``words`` and ``suggest`` term dictionaries of an index (see
        ``fulltext._schema``); counts are of live documents. An index without those fields (an
        older format, until it is rebuilt) gives an empty vocabulary."""
        live = tantivy.Query.all_query()
        try:
            words = dict(searcher.terms_with_prefix(WORDS_FIELD, "", filter_query=live))
            tagged = searcher.terms_with_prefix(SUGGEST_FIELD, "", filter_query=live)
        except ValueError:
            return cls()
        phrases: dict[str, tuple[str, int]] = {}
        for term, count in tagged:
            if count <= 0:
                continue
            kind = "category" if term.startswith(CATEGORY_TAG) else "title"
            phrase = term[len(TITLE_TAG) :]
            # A category named like a title opening is shown once, as the category.
            if phrase not in phrases or kind == "category":
                phrases[phrase] = (kind, count)
        return cls(
            words={w: n for w, n in words.items() if n > 0},
            phrases=[(p, k, n) for p, (k, n) in phrases.items()],
        )

    def __len__(self) -> int:
        return len(self.words)

    # -- type-ahead ---------------------------------------------------------------------------
    def complete(self, prefix: str, *, limit: int = TOP_PER_PREFIX) -> list[Completion]:
        """Phrases that start with ``prefix`` (compared by ``phrase_key``), most products first
        (then alphabetically); the phrase equal to the prefix is included."""
        key = phrase_key(prefix)
        if not key:
            return []
        if len(key) <= TOP_PREFIX_CHARS:
            return self._top.get(key, [])[:limit]
        start = bisect.bisect_left(self._keys, key)
        end = bisect.bisect_left(self._keys, key + "\uffff", lo=start)
        best = heapq.nsmallest(
            limit,
            (Completion(p, k, c) for p, k, c in self.phrases[start:end]),
            key=lambda c: (-c.count, c.text),
        )
        return best

    # -- spelling -----------------------------------------------------------------------------
    def knows(self, word: str) -> bool:
        return word in self.words

    def closest(self, word: str) -> str | None:
        """The catalog word nearest to ``word`` (Damerau-Levenshtein, at most 2 edits, 1 for
        words of up to 5 letters), the most frequent among equally near ones; None when there
        is none that near."""
        limit = _max_edits(word)
        best: tuple[int, int, str] | None = None  # (edits, -products, word)
        for length in range(len(word) - limit, len(word) + limit + 1):
            choices = self._by_length.get(length)
            if not choices:
                continue
            for candidate, edits, _ in process.extract_iter(
                word, choices, scorer=DamerauLevenshtein.distance, score_cutoff=limit
            ):
                if edits > _max_edits(candidate):  # "shoe" is not 2 edits from "shirt"'s typo
                    continue
                item = (edits, -self.words[candidate], candidate)
                if best is None or item < best:
                    best = item
        return None if best is None else best[2]

    def correct(self, text: str, *, known=None) -> str | None:
        """``text`` with each word the catalog does not have replaced by the closest one that it
        has; None when nothing changes. ``known(word)`` says whether the index knows a word
        some other way (a description word, a SKU: such words are not corrected)."""
        words = words_of(text)
        changed = False
        out = []
        for word in words:
            fixed = word
            if (
                len(word) >= MIN_WORD_TO_CORRECT
                and not word.isdigit()
                and not self.knows(word)
                and not (known is not None and known(word))
            ):
                fixed = self.closest(word) or word
            changed |= fixed != word
            out.append(fixed)
        return " ".join(out) if changed else None


def _best_first(item: tuple[int, str, str]) -> tuple[int, str]:
    count, phrase, _ = item
    return (-count, phrase)
