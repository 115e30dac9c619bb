"""Versioned prompts of a use case, for both prompt styles, loaded from ``config/prompts/<use-case>.yaml``.

- ``completion`` style is for *base* models such as the packaged Gemma 3 270M: a few grounded examples, then the
  question, and the model continues after ``Answer:`` until the newline.
- ``chat`` style is for instruction-tuned models: a system message and a user message with the numbered context.

Retrieved passages are numbered ``[1]``, ``[2]``... in retrieval order (the numbers the answer cites) and cut to a
character budget so the prompt fits the model's context window. No Dagster import.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from agenix_assets.core.config import ConfigError, Governed, Strict, load_yaml_model

__all__ = [
    "ChatPrompt",
    "CompletionPrompt",
    "ConfigError",
    "FewShotExample",
    "PromptBook",
    "PromptVersion",
    "format_contexts",
    "load_prompt_book",
    "prompt_book_path",
]

_WS = re.compile(r"\s+")
_ELLIPSIS = "…"
# Below this many characters a cut passage is more noise than help: drop it instead.
_MIN_PASSAGE_CHARS = 40


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _check_template(template: str, required: set[str]) -> str:
    try:
        found = _fields(template)
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"bad template: {exc}") from None
    if found != required:
        missing, unknown = sorted(required - found), sorted(found - required)
        parts = [f"missing {{{m}}}" for m in missing] + [f"unknown {{{u}}}" for u in unknown]
        raise ValueError(f"template must use exactly {sorted(required)}: {', '.join(parts)}")
    return template


def _one_line(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ending with an ellipsis."""
    if len(text) <= limit:
        return text
    head = text[: max(0, limit - len(_ELLIPSIS))]
    space = head.rfind(" ")
    if space > limit // 2:
        head = head[:space]
    return head.rstrip(" ,;:") + _ELLIPSIS


def format_contexts(contexts: list[str], max_chars: int, separator: str = "\n") -> str:
    """Number passages ``[1] ...``, ``[2] ...`` (whitespace collapsed) and keep the total within ``max_chars``.

    Passages are kept in order, whole while they fit; the first that does not fit is cut at a word boundary (if at
    least ``_MIN_PASSAGE_CHARS`` remain) and the rest are dropped, so the best-ranked passages survive and every
    number still points at the same passage as in the retrieval result.
    """
    if max_chars <= 0:
        raise ValueError("max_chars must be positive")
    out: list[str] = []
    used = 0
    for i, raw in enumerate(contexts, start=1):
        text = f"[{i}] {_one_line(raw)}"
        room = max_chars - used - (len(separator) if out else 0)
        if len(text) <= room:
            out.append(text)
            used += len(text) + (len(separator) if len(out) > 1 else 0)
            continue
        if room >= _MIN_PASSAGE_CHARS:
            out.append(_cut(text, room))
        break
    return separator.join(out)


class FewShotExample(Strict):
    """One worked example; ``context`` may be one passage or a list (numbered like real passages)."""

    context: str | list[str]
    question: str
    answer: str

    def contexts(self) -> list[str]:
        return [self.context] if isinstance(self.context, str) else list(self.context)


class CompletionPrompt(Strict):
    few_shot: list[FewShotExample] = Field(default_factory=list)
    template: str = "Context: {context}\nQuestion: {question}\nAnswer:"
    example_separator: str = "\n\n"
    context_separator: str = " "
    stop: list[str] = Field(default_factory=lambda: ["\n"])
    max_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_context_chars: int = Field(1200, gt=0)

    @field_validator("template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        return _check_template(v, {"context", "question"})


class ChatPrompt(Strict):
    system: str
    user_template: str = "Context:\n{context}\n\nQuestion: {question}"
    context_separator: str = "\n"
    max_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_context_chars: int = Field(6000, gt=0)

    @field_validator("user_template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        return _check_template(v, {"context", "question"})


class PromptVersion(Governed):
    """One version of a use case's prompts. ``name`` is filled from its key in the book; ``owner``, ``purpose``
    and ``risk_rating`` are its governance metadata (required by the prompt registry asset)."""

    name: str = ""
    description: str = ""
    no_answer: str
    completion: CompletionPrompt | None = None
    chat: ChatPrompt | None = None

    @model_validator(mode="after")
    def _some_style(self) -> PromptVersion:
        if self.completion is None and self.chat is None:
            raise ValueError("a version needs a 'completion' or a 'chat' section (or both)")
        return self

    def render_completion(
        self, question: str, contexts: list[str], max_context_chars: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The few-shot completion prompt and its request parameters ``{stop, max_tokens, temperature}``.

        Examples and question are flattened to one line each (a newline is the stop sequence, so the prompt must
        not teach the model multi-line answers). ``max_context_chars`` overrides the version's budget for the
        retrieved passages; the few-shot block is fixed and not counted.
        """
        c = self._style("completion", self.completion)
        budget = max_context_chars or c.max_context_chars
        blocks = [
            c.template.format(
                context=format_contexts(ex.contexts(), 10**9, c.context_separator), question=_one_line(ex.question)
            )
            + " "
            + _one_line(ex.answer)
            for ex in c.few_shot
        ]
        blocks.append(
            c.template.format(
                context=format_contexts(contexts, budget, c.context_separator) or "(none)",
                question=_one_line(question),
            )
        )
        params = {"stop": list(c.stop), "max_tokens": c.max_tokens, "temperature": c.temperature}
        return c.example_separator.join(blocks), params

    def render_chat(
        self, question: str, contexts: list[str], max_context_chars: int | None = None
    ) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """OpenAI chat messages (system + user) and request parameters ``{max_tokens, temperature}``."""
        c = self._style("chat", self.chat)
        budget = max_context_chars or c.max_context_chars
        user = c.user_template.format(
            context=format_contexts(contexts, budget, c.context_separator) or "(none)", question=question.strip()
        )
        messages = [{"role": "system", "content": c.system.strip()}, {"role": "user", "content": user}]
        return messages, {"max_tokens": c.max_tokens, "temperature": c.temperature}

    def _style(self, style: str, section: Any) -> Any:
        if section is None:
            raise KeyError(f"prompt version {self.name!r} has no {style!r} section")
        return section


class PromptBook(Strict):
    use_case: str
    versions: dict[str, PromptVersion] = Field(min_length=1)
    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _name_versions(cls, data: Any) -> Any:
        # Each version knows its key, so errors and responses can name it.
        if isinstance(data, dict) and isinstance(data.get("versions"), dict):
            versions = {k: {**v, "name": str(k)} if isinstance(v, dict) else v for k, v in data["versions"].items()}
            data = {**data, "versions": versions}
        return data

    def get(self, version: str | None = None) -> PromptVersion:
        """The named version (``None``: the latest). KeyError names the versions that exist."""
        if version is None:
            return self.versions[self.latest]
        try:
            return self.versions[version]
        except KeyError:
            where = f" in {self._source}" if self._source else ""
            raise KeyError(
                f"prompt version {version!r} not found for use case {self.use_case!r}{where}; "
                f"available: {', '.join(self._ordered())}"
            ) from None

    @property
    def latest(self) -> str:
        return self._ordered()[-1]

    def _ordered(self) -> list[str]:
        # v2 < v10: compare digit runs as numbers.
        return sorted(self.versions, key=lambda k: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k)])


def prompt_book_path(config_dir: Path | str, use_case: str) -> Path:
    """``<config>/prompts/<use-case>.yaml``; the snake_case file name of the other config folders also works."""
    folder = Path(config_dir) / "prompts"
    path = folder / f"{use_case}.yaml"
    snake = folder / f"{use_case.replace('-', '_')}.yaml"
    return snake if not path.exists() and snake.exists() else path


def load_prompt_book(path: Path | str) -> PromptBook:
    """Read and validate a prompt book; errors are ``ConfigError`` naming file, line and key."""
    book = load_yaml_model(Path(path), PromptBook)
    book._source = str(path)
    return book
