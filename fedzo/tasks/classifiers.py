"""Classifiers over a loaded model: prompt + verbalizer for causal LMs, pooled head for encoders.

Both are ``nn.Module`` s whose ``named_parameters()`` hold everything trainable (the
backbone, possibly PEFT-wrapped, and for encoders the linear head), so a ZO optimizer can
walk the parameters with ``requires_grad`` in sorted-name order. Both share
``batches / logits / loss / predict / evaluate``; ``logits`` runs the subclass's
``scores(input_ids, attention_mask)``, eager or compiled (:meth:`Classifier.use_forward`,
:mod:`fedzo.tasks.forward`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from fedzo.errors import ConfigError
from fedzo.models.loading import LoadedModel
from fedzo.tasks.batching import Batch, make_batches
from fedzo.tasks.forward import CompiledForward, ForwardMode
from fedzo.tasks.metrics import accuracy, macro_f1
from fedzo.tasks.types import Example, Prompt, Task

__all__ = ["Classifier", "EncoderClassifier", "PromptClassifier", "build_classifier", "last_positions"]


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row, for left or right padding: (B,)."""
    idx = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * idx).argmax(dim=1)


def output_head(model: nn.Module) -> nn.Module:
    """The output (LM head) module of a causal LM, PEFT-wrapped or not."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Module):
        raise ConfigError(f"model {type(model).__name__} has no output embeddings to score label words with")
    return head


def _decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """The text of one sequence of token ids."""
    text = tokenizer.decode(ids)
    if not isinstance(text, str):
        raise TypeError(f"decoding one sequence gave {type(text).__name__}, not str")
    return text


class Classifier(nn.Module):
    """Shared batching, loss and metrics; subclasses define ``encode`` and ``logits``."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase

    def __init__(self, loaded: LoadedModel, task: Task, max_length: int | None) -> None:
        super().__init__()
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.task = task
        self.max_length = max_length or task.max_length
        self._cache: dict[str, list[int]] = {}
        self.compiled: CompiledForward | None = None  # runtime.forward: compiled or graphs

    def use_forward(self, mode: ForwardMode) -> None:
        """Run :meth:`logits` eager (``eager``) or through the compiled ``scores`` (``compiled``,
        ``graphs``) from now on; see :mod:`fedzo.tasks.forward`."""
        if mode == "eager":
            self.compiled = None
            return
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise ConfigError(f"the tokenizer of model {type(self.model).__name__} has no pad token")
        self.compiled = CompiledForward(self.scores, mode, pad_id=int(pad_id), max_width=self.max_length)

    def eager(self) -> AbstractContextManager[None]:
        """Forwards inside run eager, whatever ``runtime.forward`` says (module code patched per call)."""
        return nullcontext() if self.compiled is None else self.compiled.eager()

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return self.task.num_labels

    def encode(self, text: str) -> list[int]:  # pragma: no cover - abstract
        """Token ids for one example text, at most ``max_length`` long."""
        raise NotImplementedError

    def scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Class scores (B, num_labels) of padded token ids (the function compiled per shape)."""
        raise NotImplementedError

    def _scoring(self) -> AbstractContextManager[object]:
        """What a call of :meth:`scores` needs around it (the prompt classifier's answer hook)."""
        return nullcontext()

    def logits(self, batch: Batch) -> torch.Tensor:
        """Class scores (B, num_labels): compiled where ``runtime.forward`` asks for it and the
        call allows it (no autograd, no forward-mode AD), else eager."""
        with self._scoring():
            if self.compiled is not None and self.compiled.serves():
                return self.compiled(batch.input_ids, batch.attention_mask)
            return self.scores(batch.input_ids, batch.attention_mask)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each text (subclasses tokenize them in one call)."""
        return [self.encode(t) for t in texts]

    def prefetch(self, examples: Sequence[Example]) -> None:
        """Encode, in one call, the texts of ``examples`` not encoded yet (host speed only:
        batches built later find them encoded)."""
        missing = list(dict.fromkeys(e.text for e in examples if e.text not in self._cache))
        if missing:
            self._cache.update(zip(missing, self.encode_many(missing), strict=True))

    def _encode_cached(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = self.encode(text)
        return ids

    def padded_width(self, examples: Sequence[Example]) -> int:
        """The width :meth:`batches` pads one batch of ``examples`` to: their longest encoding."""
        return max(len(self._encode_cached(e.text)) for e in examples)

    def batches(
        self, examples: Sequence[Example], batch_size: int, *, seed: int = 0, shuffle: bool = False
    ) -> Iterator[Batch]:
        """Padded batches (to the batch's longest, truncated to ``max_length``)."""
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise ConfigError(f"the tokenizer of model {type(self.model).__name__} has no pad token")
        side = getattr(self.tokenizer, "padding_side", "right")
        return make_batches(
            examples, batch_size, self._encode_cached, pad_id=pad_id, side=side, seed=seed, shuffle=shuffle
        )

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy of the class scores against ``batch.labels`` (a float32 scalar:
        under a half-precision model the few class scores are widened first, so that the
        loss difference a ZO step divides by 2 eps is not rounded to the model's precision)."""
        return F.cross_entropy(self.logits(batch).float(), batch.labels)

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """Predicted class per row (B,)."""
        return self.logits(batch).argmax(dim=-1)

    @torch.no_grad()
    def evaluate(self, examples: Sequence[Example], batch_size: int = 16) -> dict[str, Any]:
        """``accuracy``, ``macro_f1``, ``n`` and ``pred_counts`` (predictions per class).

        The examples are batched in order of their encoded length, so a batch is padded to
        little more than its own tokens (Rotten Tomatoes dev, SmolLM2 prompts, batches of
        16: 1.29x the tokens in the given order, 1.05x sorted). Every figure returned is a
        count over examples, so the order changes none of them beyond the float32 rounding
        of a row's scores in a batch of another width."""
        device = next(self.parameters()).device
        labels: list[int] = []
        preds: list[int] = []
        by_length = sorted(examples, key=lambda e: len(self._encode_cached(e.text)))  # stable: ties keep their order
        for batch in self.batches(by_length, batch_size):
            preds += self.predict(batch.to(device)).tolist()
            labels += batch.labels.tolist()
        return {
            "accuracy": accuracy(labels, preds),
            "macro_f1": macro_f1(labels, preds, self.num_labels),
            "n": len(labels),
            "pred_counts": [preds.count(c) for c in range(self.num_labels)],
        }


class PromptClassifier(Classifier):
    """MeZO-style prompt classification with a causal LM.

    The example is rendered with the prompt; the scores are the LM logits of the
    verbalizer tokens at the last non-pad position. Only that position goes through the
    output head: a pre-hook on the head selects it, which works whatever wraps the model
    (PEFT LoRA, prefix or prompt tuning) and for left or right padding.
    """

    label_token_ids: torch.Tensor  # a buffer: the verbalizer's token ids (num_labels,)

    def __init__(
        self, loaded: LoadedModel, task: Task, prompt: str | None = None, *, max_length: int | None = None
    ) -> None:
        super().__init__(loaded, task, max_length)
        if loaded.kind != "causal-lm":
            raise ConfigError(f"PromptClassifier needs a causal LM; model {loaded.name!r} is an {loaded.kind}")
        self.prompt: Prompt = task.prompt(prompt)
        if len(self.prompt.verbalizer) != task.num_labels:
            raise ConfigError(
                f"prompt {self.prompt.name!r} has {len(self.prompt.verbalizer)} label words, "
                f"task {task.name!r} has {task.num_labels} labels"
            )
        self.register_buffer(
            "label_token_ids", torch.tensor(self._label_tokens(loaded.name), dtype=torch.long), persistent=False
        )
        self._answer = _AnswerRows()

    def _label_tokens(self, model_name: str) -> list[int]:
        """The single token id of each verbalizer word; error if a word is not one token."""
        ids = []
        for label, word in zip(self.task.label_names, self.prompt.verbalizer, strict=True):
            toks = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            unk = self.tokenizer.unk_token_id
            if unk is not None and toks == [unk]:
                raise ConfigError(
                    f"prompt {self.prompt.name!r} of task {self.task.name!r}: label word {word!r} "
                    f"(label {label!r}) is unknown to the tokenizer of model {model_name!r}; "
                    f"choose another prompt ({', '.join(self.task.prompts)})"
                )
            if len(toks) != 1:
                pieces = self.tokenizer.convert_ids_to_tokens(toks)
                raise ConfigError(
                    f"prompt {self.prompt.name!r} of task {self.task.name!r}: label word {word!r} "
                    f"(label {label!r}) is {len(toks)} tokens {pieces} for model {model_name!r}; "
                    "each label word must be a single token. Choose another prompt "
                    f"({', '.join(self.task.prompts)}) or a verbalizer of single-token words"
                )
            ids.append(toks[0])
        if len(set(ids)) != len(ids):
            raise ConfigError(f"prompt {self.prompt.name!r}: two labels share a token {ids}")
        return ids

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each text: the rendered prompts tokenized in one call, an
        over-long one cut as :meth:`encode` cuts it."""
        tok = self.tokenizer
        rendered = tok([self.prompt.render(t, tok) for t in texts], add_special_tokens=not self.prompt.chat)
        return [list(ids) if len(ids) <= self.max_length else self.encode(t)
                for t, ids in zip(texts, rendered["input_ids"], strict=True)]

    def encode(self, text: str) -> list[int]:
        """Prompt token ids; an over-long text is cut (never the prompt's answer cue)."""
        special = not self.prompt.chat
        tok = self.tokenizer

        def ids_for(t: str) -> list[int]:
            return list(tok(self.prompt.render(t, tok), add_special_tokens=special)["input_ids"])

        ids = ids_for(text)
        if len(ids) <= self.max_length:
            return ids
        text_ids = tok(text, add_special_tokens=False)["input_ids"]
        keep = len(text_ids) - (len(ids) - self.max_length)
        while keep > 0:
            ids = ids_for(_decode(tok, text_ids[:keep]))
            if len(ids) <= self.max_length:
                return ids
            keep -= max(1, len(ids) - self.max_length)
        raise ConfigError(
            f"max_length {self.max_length} is too short for prompt {self.prompt.name!r} "
            f"({len(ids_for(''))} tokens without any text)"
        )

    def _prompt_learning(self) -> bool:
        config = getattr(self.model, "active_peft_config", None)
        return bool(getattr(config, "is_prompt_learning", False))

    @contextmanager
    def _scoring(self) -> Iterator[None]:
        """The answer hook on the output head, for the calls of :meth:`scores` inside."""
        handle = output_head(self.model).register_forward_pre_hook(self._answer)
        try:
            yield
        finally:
            handle.remove()
            self._answer.from_end = None

    def scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Verbalizer logits at the answer position (B, num_labels); under :meth:`_scoring`."""
        mask = attention_mask
        self._answer.from_end = mask.shape[1] - 1 - last_positions(mask)  # (B,)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "use_cache": False}
        if not self._prompt_learning():
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.model(**kwargs)
        scores = out.logits[:, -1, :]  # (B, V)
        return scores.index_select(-1, self.label_token_ids)


class _AnswerRows:
    """A forward pre-hook of the output head that keeps each row's answer position only: the
    position ``from_end`` places before the row's end (set by the call in progress). One object
    per classifier, so that a compiled forward sees the same hook at every call."""

    def __init__(self) -> None:
        self.from_end: torch.Tensor | None = None  # (B,)

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.from_end is None:
            raise RuntimeError("the output head ran outside PromptClassifier.logits")
        hidden = args[0]  # (B, T', H); T' > T when virtual tokens were prepended
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return (hidden[rows, hidden.shape[1] - 1 - self.from_end].unsqueeze(1), *args[1:])


class EncoderClassifier(Classifier):
    """Mean-pooled encoder states followed by a linear head (seeded init, trainable)."""

    def __init__(
        self, loaded: LoadedModel, task: Task, *, max_length: int | None = None, seed: int = 0
    ) -> None:
        super().__init__(loaded, task, max_length)
        config = getattr(loaded.model, "config", None)
        hidden = getattr(config, "hidden_size", None)
        if hidden is None:
            raise ConfigError(f"model {loaded.name!r} has no config.hidden_size for a classification head")
        dtype = next(loaded.model.parameters()).dtype
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(hidden, task.num_labels, dtype=dtype)

    def encode(self, text: str) -> list[int]:
        """Token ids with the tokenizer's special tokens, truncated to ``max_length``."""
        return list(self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"])

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each text, tokenized in one call."""
        return [list(x) for x in self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]

    def scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Head scores of the mean of non-pad token states (B, num_labels)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        states = out.last_hidden_state  # (B, T', H)
        mask = attention_mask
        extra = states.shape[1] - mask.shape[1]  # virtual tokens of prompt tuning
        if extra > 0:
            mask = torch.cat([mask.new_ones(mask.shape[0], extra), mask], dim=1)
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)


def build_classifier(
    loaded: LoadedModel, task: Task, prompt: str | None = None, *, max_length: int | None = None
) -> Classifier:
    """A :class:`PromptClassifier` for causal LMs, an :class:`EncoderClassifier` for encoders."""
    if loaded.kind == "causal-lm":
        return PromptClassifier(loaded, task, prompt, max_length=max_length)
    if prompt is not None:
        raise ConfigError(f"prompt {prompt!r} given, but model {loaded.name!r} is an encoder (no prompts)")
    return EncoderClassifier(loaded, task, max_length=max_length)
