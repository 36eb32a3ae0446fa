"""Prompt templates and verbalizers for the shipped tasks (MeZO-style prompt classification)."""

from __future__ import annotations

from collections.abc import Sequence

from fedzo.tasks.types import Prompt

__all__ = ["generic_prompts", "sentiment_prompts", "topic_prompts"]


def sentiment_prompts(kind: str, noun: str) -> dict[str, Prompt]:
    """Binary sentiment prompts (labels: 0 negative, 1 positive) for texts of one ``kind``.

    ``kind`` names the text in the template (``Review``), ``noun`` its subject (``movie``).
    """
    return {
        "chat": Prompt(
            name="chat",
            template=(
                f"Is the sentiment of this {noun} {kind.lower()} positive or negative? "
                f"Answer with one word.\n\n{kind}: {{text}}"
            ),
            verbalizer=("negative", "positive"),
            chat=True,
        ),
        "sentiment": Prompt(
            name="sentiment",
            template=f"{kind}: {{text}}\nSentiment (positive or negative):",
            verbalizer=(" negative", " positive"),
        ),
        "was": Prompt(
            name="was",
            template=f"{kind}: {{text}}\nThe {noun} was",
            verbalizer=(" terrible", " great"),
        ),
    }


def topic_prompts(label_names: Sequence[str]) -> dict[str, Prompt]:
    """Topic prompts whose answer is the label name itself (after a space)."""
    words = tuple(f" {name}" for name in label_names)
    listed = ", ".join(label_names)
    return {
        "chat": Prompt(
            name="chat",
            template=(
                f"Which topic is this news article about: {listed}? "
                "Answer with one word.\n\nArticle: {text}"
            ),
            verbalizer=words,
            chat=True,
            answer_prefix="Topic:",
        ),
        "topic": Prompt(name="topic", template="Article: {text}\nTopic:", verbalizer=words),
    }


def generic_prompts(label_names: Sequence[str], words: Sequence[str] | None = None) -> dict[str, Prompt]:
    """Prompts for a user dataset: the answers are ``words`` (default: the label names)."""
    words = tuple(words) if words is not None else tuple(f" {name}" for name in label_names)
    listed = ", ".join(label_names)
    return {
        "chat": Prompt(
            name="chat",
            template=f"Classify the text as one of: {listed}. Answer with one word.\n\nText: {{text}}",
            verbalizer=words,
            chat=True,
            answer_prefix="Label:",
        ),
        "label": Prompt(name="label", template="{text}\nLabel:", verbalizer=words),
    }
