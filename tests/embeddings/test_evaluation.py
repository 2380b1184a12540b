"""Retrieval metric maths and hybrid-search helpers on hand-made data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.evaluation import (
    colour_type_queries,
    label_precision_at_k,
    mean_reciprocal_rank,
    precision_at_k,
    precision_ceiling,
    recall_at_k,
    recall_mrr_from_ranks,
    retrieval_report,
    target_ranks,
    top_k,
    zero_shot_accuracy,
)
from embeddings.hybrid import (
    choose_min_score,
    hybrid_rank,
    random_string_queries,
    rrf_fuse,
)


def test_precision_at_k_divides_by_k_and_counts_short_rankings_as_misses():
    rankings = [[1, 2, 3, 4], [5, 6]]
    relevant = [{1, 3}, {5, 6, 7}]
    # query 1: 2 hits of 4; query 2: 2 hits, ranking has only 2 items, still divided by 4
    assert precision_at_k(rankings, relevant, k=4) == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert precision_at_k([[9, 1]], [{1}], k=1) == 0.0


def test_precision_ceiling_is_mean_of_min_k_relevant_over_k():
    assert precision_ceiling([3, 10, 25], k=10) == pytest.approx((0.3 + 1.0 + 1.0) / 3)


def test_recall_and_mrr():
    rankings = [[4, 2, 7], [1, 0, 3], [5, 6, 8]]
    targets = [4, 3, 9]
    assert recall_at_k(rankings, targets, 1) == pytest.approx(1 / 3)
    assert recall_at_k(rankings, targets, 3) == pytest.approx(2 / 3)
    assert mean_reciprocal_rank(rankings, targets) == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_target_ranks_are_pessimistic_on_ties():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.2, 0.2], [0.0, 0.3, 0.4]])
    ranks = target_ranks(scores, [0, 1, 0])
    assert ranks.tolist() == [1, 3, 3]
    out = recall_mrr_from_ranks(ranks, (1, 3))
    assert out["recall@1"] == pytest.approx(1 / 3)
    assert out["recall@3"] == 1.0
    assert out["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)


def test_top_k_excludes_self():
    scores = np.array([[1.0, 0.5, 0.9], [0.5, 1.0, 0.2], [0.9, 0.2, 1.0]])
    assert top_k(scores, 2, exclude_self=True).tolist() == [[2, 1], [0, 2], [0, 1]]
    assert top_k(scores, 1).tolist() == [[0], [1], [2]]


def test_label_precision_excludes_the_query_itself():
    # Two tight clusters; the query is its own best match but must not count.
    emb = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = ["a", "a", "b", "b"]
    # k=1: nearest other item shares the label -> 1.0 (with self included it would also be 1.0)
    assert label_precision_at_k(emb, labels, k=1) == 1.0
    # k=2: one same-label neighbour and one other-label item -> 0.5 (self would make it 1.0)
    assert label_precision_at_k(emb, labels, k=2) == 0.5


def test_zero_shot_accuracy():
    images = np.array([[1, 0], [0, 1], [1, 0.1]], dtype=np.float32)
    classes = np.array([[1, 0], [0, 1]], dtype=np.float32)
    assert zero_shot_accuracy(images, classes, [0, 1, 1]) == pytest.approx(2 / 3)


def test_colour_type_queries_need_three_items_and_both_fields():
    types = ["Tshirts"] * 4 + ["Shirts"] * 2 + ["Tshirts"]
    colours = ["Navy Blue", "Navy Blue", "Navy Blue", "Red", "White", "White", ""]
    queries = colour_type_queries(types, colours)
    assert [(q.text, sorted(q.relevant)) for q in queries] == [("Navy Blue Tshirts", [0, 1, 2])]


def test_retrieval_report_on_a_perfect_toy_space():
    # Three groups of three items; each item's image vector is its group's direction plus a tiny
    # item-specific offset, and every text maps to a known direction, so each metric is known.
    dims = 4
    directions = {
        "red a": [1, 0, 0, 0],
        "Red A": [1, 0, 0, 0],
        "red b": [0, 1, 0, 0],
        "Red B": [0, 1, 0, 0],
        "blue a": [0, 0, 1, 0],
        "Blue A": [0, 0, 1, 0],
        "a photo of A": [1, 0, 1, 0],
        "a photo of B": [0, 1, 0, 0],
    }

    def encode(texts):
        out = np.array([directions.get(t, [0, 0, 0, 1]) for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    titles = ["red a"] * 3 + ["red b"] * 3 + ["blue a"] * 3
    types = ["A"] * 3 + ["B"] * 3 + ["A"] * 3
    colours = ["Red"] * 6 + ["Blue"] * 3
    rng = np.random.default_rng(0)
    img = encode(titles) + 1e-3 * rng.standard_normal((9, dims)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    rep = retrieval_report(img, titles, types, colours, encode, k=2)
    assert rep["img2img_type_colour_p@10"] == 1.0  # the 2 nearest others are the same group
    assert rep["img2img_type_p@10"] == 1.0
    assert rep["text_queries"] == 3.0
    assert rep["text2img_p@10"] == 1.0
    assert rep["text2img_ceiling"] == 1.0  # min(2, 3) / 2
    # Three items share each title's direction, so the exact product ranks 1-3: recall@10 is 1.
    assert rep["title_recall@10"] == 1.0
    assert 1 / 3 <= rep["title_mrr"] <= 1.0
    assert rep["zero_shot_type_acc"] == 1.0
    assert rep["zero_shot_classes"] == 2.0


def test_rrf_fuse_known_scores_and_ties():
    fused = rrf_fuse([[1, 2, 3], [3, 1]], k=0)
    # scores: 1 -> 1/1 + 1/2 = 1.5, 3 -> 1/3 + 1 = 1.333, 2 -> 1/2
    assert fused == [1, 3, 2]
    assert rrf_fuse([[5, 4, 3]]) == [5, 4, 3]
    assert rrf_fuse([[1, 2], [2, 1]], k=60) == [1, 2]  # tie -> first-seen order
    assert rrf_fuse([[1, 2], [3]], limit=1) == [1]
    with pytest.raises(ValueError):
        rrf_fuse([[1]], weights=[1.0, 2.0])


def test_hybrid_rank_leaves_vector_results_alone_without_lexical_hits():
    assert hybrid_rank([3, 1, 2], [], limit=2) == [3, 1]
    assert hybrid_rank([3, 1, 2], [2], k=1)[0] == 2  # 1/(1+3) + 1/(1+1) beats 1/(1+1)


def test_choose_min_score_keeps_real_queries_and_rejects_nonsense():
    real = [0.5, 0.6, 0.7, 0.8, 0.9] * 4
    junk = [0.1, 0.2, 0.3, 0.55]
    t = choose_min_score(real, junk, min_real_kept=0.95)
    assert t.min_score == 0.5
    assert t.real_kept == 1.0
    assert t.nonsense_rejected == 0.75
    t80 = choose_min_score(real, junk, min_real_kept=0.8)
    assert t80.min_score == pytest.approx(0.6) and t80.nonsense_rejected == 1.0


def test_random_string_queries_are_deterministic():
    assert random_string_queries(5, seed=1) == random_string_queries(5, seed=1)
    assert len(set(random_string_queries(50))) == 50


# -- shopper photos against a catalog -------------------------------------------------------------


def _unit(rows):
    a = np.array(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_photo_report_known_answers():
    from embeddings.evaluation import photo_report

    catalog = _unit([[1, 0], [1, 0], [0, 1], [0, 1]])
    types = ["Tshirts", "Tshirts", "Shoes", "Shoes"]
    # Two tee photos (the second looks like a shoe), two shoe photos, a hat the map leaves out.
    photos = _unit([[1, 0.1], [0.2, 1], [0, 1], [0.1, 1], [1, 1]])
    labels = ["T-Shirt", "T-Shirt", "Shoes", "Shoes", "Hat"]
    asked: list[str] = []

    def encode(texts):
        asked.extend(texts)
        return _unit([[1, 0] if "t-shirt" in t else [0, 1] for t in texts])

    rep = photo_report(
        photos,
        labels,
        catalog,
        types,
        {"T-Shirt": ["Tshirts"], "Shoes": ["Shoes", "Sandals"]},
        encode,
        prompts={"T-Shirt": "t-shirt", "Shoes": "shoes"},
        k=2,
    )
    assert rep["photos"] == 4.0  # the unmapped hat is not scored
    # photo -> catalog: tee 1 finds both tees, tee 2 both shoes, each shoe both shoes.
    assert rep["photo2catalog_p@10"] == pytest.approx(3 / 4)
    assert rep["photo2catalog_ceiling"] == 1.0
    assert rep["photo2catalog_by_label"] == {
        "Shoes": {"photos": 2.0, "catalog_items": 2.0, "p@10": 1.0},
        "T-Shirt": {"photos": 2.0, "catalog_items": 2.0, "p@10": 0.5},
    }
    # photo -> photo (itself excluded, k=2): tee 1's neighbours are tee 2 and a shoe (1 hit),
    # tee 2's are the two shoes (0), each shoe's are the other shoe and tee 2 (1 each).
    assert rep["photo2photo_p@10"] == pytest.approx((1 + 0 + 1 + 1) / (4 * 2))
    assert rep["photo2photo_ceiling"] == 0.5  # one other photo per label, k=2
    # zero-shot with the catalog's template: tee 2 is taken for shoes.
    assert sorted(asked) == ["a photo of shoes", "a photo of t-shirt"]
    assert rep["photo_zero_shot_acc"] == pytest.approx(3 / 4)
    assert rep["photo_zero_shot_classes"] == 2.0


def test_photo_report_single_photo_labels_are_not_photo_queries_and_empty_types_score_zero():
    from embeddings.evaluation import photo_report

    catalog = _unit([[1, 0], [0, 1], [0, 1]])
    photos = _unit([[1, 0], [0, 1], [0.1, 1]])
    rep = photo_report(
        photos,
        ["Blazer", "Shoes", "Shoes"],
        catalog,
        ["Tshirts", "Shoes", "Shoes"],
        {"Blazer": ["Blazers"], "Shoes": ["Shoes"]},
        lambda texts: _unit([[1, 0]] * len(texts)),
        k=1,
    )
    # The blazer photo has nothing relevant in this catalog: 0, and the ceiling says so.
    assert rep["photo2catalog_by_label"]["Blazer"]["p@10"] == 0.0
    assert rep["photo2catalog_ceiling"] == pytest.approx(2 / 3)
    # Only the two shoe photos query photos; each finds the other shoe.
    assert rep["photo2photo_p@10"] == 1.0
    # Identical prompts: argmax takes the first class (Blazer), right for 1 of 3.
    assert rep["photo_zero_shot_acc"] == pytest.approx(1 / 3)


def test_format_report_shows_photo_rows_only_when_measured():
    from embeddings.evaluation import format_report

    plain = format_report({"model": {"img2img_type_p@10": 0.5}})
    assert "shopper photo" not in plain
    assert "text->image P@10" in plain  # catalog rows stay, with '-' when absent
    both = format_report(
        {"model": {"photo2catalog_p@10": 0.25}, "random-init": {"photo2catalog_p@10": 0.125}}
    )
    line = next(x for x in both.splitlines() if x.startswith("shopper photo->catalog"))
    assert line.split()[-2:] == ["0.250", "0.125"]
