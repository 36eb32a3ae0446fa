"""Corpus loaders on fixture archives in the real formats, and split determinism."""

from __future__ import annotations

import pytest

from fedzo import assets
from fedzo.errors import AssetError
from fedzo.tasks.registry import load_task
from fedzo.tasks.splits import default_sizes, stratified_split

SENTIMENT_FILES = assets.ASSETS["vader-corpora"].include


def ground_truth(rows: list[tuple[str, float, str]]) -> bytes:
    """A ``*_GroundTruth.txt`` file: ``id<TAB>score<TAB>text`` lines, UTF-8, CRLF."""
    return "".join(f"{i}\t{s}\t{t}\r\n" for i, s, t in rows).encode("utf-8")


def _movie_rows(n: int) -> list[tuple[str, float, str]]:
    rows = [(str(i), (1.5 if i % 3 else -2.25), f"sentence number {i} \u00e9t\u00e9") for i in range(n)]
    rows.append(("zero", 0.0, "a neutral line is dropped"))
    return rows


@pytest.fixture
def vader(serve_assets):
    files = {name: ground_truth([("1", -1.0, "x"), ("2", 2.0, "y")]) for name in SENTIMENT_FILES}
    files["movieReviewSnippets_GroundTruth.txt"] = ground_truth(_movie_rows(300))
    serve_assets({"vader-corpora": files})


def test_rotten_tomatoes_parses_crlf_scores_and_drops_neutral(vader):
    task = load_task("rotten-tomatoes")
    everything = task.train + task.dev + task.test
    assert len(everything) == 300
    assert all(not e.text.endswith("\r") for e in everything)
    assert all(e.text != "a neutral line is dropped" for e in everything)
    by_text = {e.text: e.label for e in everything}
    assert by_text["sentence number 1 \u00e9t\u00e9"] == 1 and by_text["sentence number 3 \u00e9t\u00e9"] == 0
    assert task.label_names == ("negative", "positive")
    assert (len(task.test), len(task.dev)) == default_sizes(300) == (60, 30)
    assert task.default_prompt == "chat" and {"chat", "sentiment", "was"} <= set(task.prompts)


def test_split_is_stratified_and_fixed_by_seed(vader):
    a, b, c = load_task("rotten-tomatoes", seed=0), load_task("rotten-tomatoes", seed=0), load_task("rotten-tomatoes", seed=1)
    assert a.test == b.test and a.train == b.train
    assert a.test != c.test
    share = sum(e.label for e in a.test) / len(a.test)
    assert share == pytest.approx(200 / 300, abs=0.02)  # 2/3 positive overall
    assert not set(a.test) & set(a.train) and not set(a.dev) & set(a.train)


def test_other_sentiment_corpora_share_the_archive(vader):
    for name in ("tweets", "amazon-reviews"):
        task = load_task(name)
        assert len(task.train + task.dev + task.test) == 2


def test_stratified_split_sizes_and_disjointness():
    labels = [0] * 70 + [1] * 20 + [2] * 10
    train, dev, test = stratified_split(labels, 20, 10, seed=3)
    assert (len(test), len(dev), len(train)) == (20, 10, 70)
    assert sorted(train + dev + test) == list(range(100))
    assert [sum(labels[i] == c for i in test) for c in range(3)] == [14, 4, 2]


def test_bbc_news_reads_topic_folders(serve_assets):
    files = {}
    for folder in ("business", "entertainment", "politics", "sports", "tech"):
        for i in range(12):
            files[f"{folder}/{i:03d}.txt"] = f"Headline {folder} {i}\n\nBody text.\n".encode()
    files["tech/bad.txt"] = b"caf\xe9 latin-1 text"
    serve_assets({"bbc-news": files})
    task = load_task("bbc-news")
    assert task.label_names == ("business", "entertainment", "politics", "sport", "tech")
    everything = task.train + task.dev + task.test
    assert len(everything) == 61
    assert {e.label for e in everything if e.text.startswith("Headline sports")} == {3}
    assert any("caf\u00e9" in e.text for e in everything)
    assert all("\n" not in e.text for e in everything)


def test_missing_corpus_offline_names_fetch_command(tmp_path):
    with pytest.raises(AssetError, match="fedzo assets fetch vader-corpora"):
        load_task("rotten-tomatoes", cache_dir=tmp_path / "empty")


@pytest.mark.integration
def test_real_rotten_tomatoes_split(monkeypatch):
    monkeypatch.undo()
    task = load_task("rotten-tomatoes")
    assert (len(task.train), len(task.dev), len(task.test)) == (9068, 500, 1000)
    everything = task.train + task.dev + task.test
    assert sum(e.label for e in everything) == 5242


@pytest.mark.integration
def test_real_bbc_news(monkeypatch):
    monkeypatch.undo()
    task = load_task("bbc-news")
    everything = task.train + task.dev + task.test
    assert [sum(e.label == c for e in everything) for c in range(5)] == [510, 386, 417, 511, 401]
