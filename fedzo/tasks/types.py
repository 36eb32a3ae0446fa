"""Task data types: labelled examples, prompt templates with verbalizers, and tasks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedzo.errors import ConfigError

__all__ = ["SPLITS", "Example", "Prompt", "Task"]

SPLITS: tuple[str, ...] = ("train", "dev", "test")


@dataclass(frozen=True)
class Example:
    """One labelled text; ``label`` indexes the task's ``label_names``."""

    text: str
    label: int


@dataclass(frozen=True)
class Prompt:
    """A template that turns a text into a question whose answer is one label word.

    ``template`` holds ``{text}``. ``verbalizer[i]`` is the exact answer string for label
    ``i`` (with its leading space where it follows a space); each must be one token of
    the model's tokenizer. With ``chat``, the template is the user turn of the tokenizer's
    chat template and ``answer_prefix`` is written at the start of the assistant turn.
    """

    name: str
    template: str
    verbalizer: tuple[str, ...]
    chat: bool = False
    answer_prefix: str = ""

    def render(self, text: str, tokenizer: Any = None) -> str:
        """The full prompt string for ``text`` (the chat form needs the tokenizer)."""
        body = self.template.replace("{text}", text)
        if not self.chat:
            return body
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"prompt {self.name!r} uses a chat template, but the tokenizer has none; "
                "choose a plain prompt"
            )
        messages = [{"role": "user", "content": body}]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return str(rendered) + self.answer_prefix


@dataclass(frozen=True, eq=False)
class Task:
    """A classification task: labelled splits, a default max length and named prompts."""

    name: str
    label_names: tuple[str, ...]
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]
    max_length: int
    prompts: Mapping[str, Prompt] = field(default_factory=dict)
    default_prompt: str | None = None

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    def split(self, name: str) -> tuple[Example, ...]:
        """One of the splits by name (``train``, ``dev``, ``test``)."""
        if name not in SPLITS:
            raise ConfigError(f"split {name!r} of task {self.name!r} is not one of {', '.join(SPLITS)}")
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]

    def prompt(self, name: str | None = None) -> Prompt:
        """The named prompt, or the default one (the best measured)."""
        key = name or self.default_prompt
        if key is None or key not in self.prompts:
            known = ", ".join(self.prompts) or "none"
            raise ConfigError(f"prompt {key!r} is not defined for task {self.name!r}; known: {known}")
        return self.prompts[key]
