"""A use case's request handling, step by step: the one code path that serving, shadow traffic and evaluation run.

``RagPipeline.run(release, messages)`` takes a conversation to an answer in these steps, each a method:

1. ``guard``: the input guardrails (PII redaction before any model sees the text, prompt injection, topics, tools);
2. ``rewrite``: the standalone question retrieval runs on; a follow-up ("How long is its run-in period?") gets the
   product, policy or region it refers to from earlier turns (``rewrite_query``, deterministic, no model);
   ``expand`` adds the knowledge base's words for the customer's (the use case's glossary, serving/glossary.py);
   a question under one of the use case's ``out_of_scope`` rules (prices, stock, ...) gets "I don't know" here;
3. ``retrieve``: passages from the release's index version, filtered by data domain, and the relevant ones;
   ``retrieval`` overrides production's retrieval settings (a candidate's), cached per settings;
4. ``route``: which backends answer, in which order (small/large/extractive, cost-aware, circuit breaker);
5. ``render``: the release's versioned prompt for the chosen backend;
6. ``answer``: the backend call, falling back along the chain when a backend fails or finds no answer;
7. ``check``: grounding (an answer that repeats the question or invents a number is rejected and the next tier
   tries) and the output guardrail (PII in the answer).

The result is a :class:`RagResult`: the question, the query, the answer text (the prompt's no-answer text when
nothing relevant was found), the passages, model, route, usage, cost and the whole run's latency. HTTP concerns
(keys, limits, the request log, SSE, error statuses) stay in ``serving/app.py``; failures the client must hear
about are :class:`RagError` with a code the gateway maps to a status.

``RagPipeline.from_config(config_dir, home, use_case)`` builds the same parts the gateway builds, without keys,
logs or HTTP, so an evaluation runner calls ``await pipeline.run(release, messages)`` against the real backends.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from agenix_assets.core.config import ConfigError

from .backends import BackendError, BackendPool
from .config import GatewayConfig, ModelRegistry, ModelSpec, Release, UseCaseSettings
from .extractive import product_codes, with_expansions, without_negated
from .glossary import Glossary, use_case_glossary
from .guardrails import GuardrailPolicy, Guardrails, GuardrailViolation, InputResult
from .prompts import PromptBook
from .rag import IndexUnavailable, Passage, UseCaseIndex, grounding_problem
from .routing import NoBackendAvailable, RouteDecision, Router

log = logging.getLogger("agenix.gateway")


# ------------------------------------------------------------------------------------------------ small helpers


def estimate_tokens(text: str) -> int:
    """~4 characters a token: used only before the backend reports real usage (limits are settled after)."""
    return max(1, (len(text) + 3) // 4)


def message_text(content: Any) -> str:
    """The text of a message's content (validated: a string, a list of content parts, or null)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return message_text(messages[-1].get("content"))


# ------------------------------------------------------------------------------------------------ follow-up rewriting

# A product code as the catalogue writes it (GV-4150, PRV-1230, PC-6360-SK3), optionally followed by its name
# ("GV-4150 Gate Valve"): capitalised words right after the code.
_PRODUCT = re.compile(r"\b([A-Z]{2,4}-\d{2,5})\b((?: (?:[A-Z][A-Za-z-]*,?)(?= |$|[.?!;:)]))*)")
_PRODUCT_CODE = re.compile(r"\b[A-Z]{2,4}-\d{2,5}\b")
_POLICY_TOPIC = re.compile(r"\b(warranty|returns?|refunds?|shipping|delivery|deliveries|rma)\b", re.I)
# A region as running text names it: "in Austria", "for the Netherlands", "customers in the United Kingdom".
_REGION = re.compile(r"\b(?:in|for|to|from)\s+((?:the\s+)?[A-Z][a-zà-ÿ]+(?:\s+[A-Z][a-zà-ÿ]+)?)")
_NOT_REGIONS = {"I", "The", "My", "Our", "Your", "It", "This", "That", "Monday", "Tuesday", "Wednesday", "Thursday",
                "Friday", "Saturday", "Sunday", "January", "February", "March", "April", "May", "June", "July",
                "August", "September", "October", "November", "December", "Celsius", "Fahrenheit", "English", "Nm",
                "Bar", "Kelvin"}
# Words that point back to something named earlier.
_POSSESSIVE = re.compile(r"\b(its|their)\s+", re.I)
_DEMONSTRATIVE = re.compile(
    r"\b(?:(?:this|that|the same)(?:\s+(?:one|product|model|unit|device|item|pump|valve|compressor|gearbox|bearing|"
    r"seal|sensor|roller|meter|part))?|these|those)\b(?=\s*(?:[?.!,;:]|$|\s+(?:is|are|was|has|have|need|needs|"
    r"take|takes|come|comes|require|requires|use|uses|work|works|run|runs|do|does)\b))"
    r"|\b(?:this|that|the same)\s+(?:one|product|model|unit|device|item|pump|valve|compressor|gearbox|bearing|seal|"
    r"sensor|roller|meter|part)\b",
    re.I)
_PRONOUN = re.compile(r"\b(it|them|they)\b", re.I)
# "it" that refers to nothing: "How long does it take", "is it possible", "it depends".
_DUMMY_IT = re.compile(r"\bit\s+(?:take|takes|took|possible|necessary|depends|matters|mean|means|okay|ok|worth)\b"
                       r"|\b(?:is|was)\s+it\s+(?:possible|necessary|okay|ok|true|worth)\b", re.I)
# Where a noun phrase after "its" ends: punctuation or a word that starts a new part of the sentence.
_NP_END = {"at", "in", "on", "for", "after", "before", "when", "if", "and", "or", "to", "with", "under", "from", "of",
           "during", "is", "are", "was", "be", "should", "must", "can", "will", "would", "per", "than", "by", "need",
           "needs", "take", "takes", "require", "requires", "have", "has", "do", "does", "cost", "costs", "last",
           "lasts", "get", "gets", "mean", "means", "apply", "applies"}


@dataclass(frozen=True)
class Entities:
    """What a message names: product (the code, with its name when given), policy topic, region."""

    product: str | None = None
    topic: str | None = None
    region: str | None = None

    def any(self) -> bool:
        return bool(self.product or self.topic or self.region)


def find_entities(text: str) -> Entities:
    """The last product, policy topic and region a text names (the latest mention is the one a follow-up means)."""
    product = None
    for m in _PRODUCT.finditer(text):
        name = m.group(2).rstrip(",").strip()
        product = f"{m.group(1)} {name}".strip()
    topics = _POLICY_TOPIC.findall(text)
    region = None
    for m in _REGION.finditer(text):
        words = m.group(1).split()
        if words[-1] in _NOT_REGIONS or (words[0] != "the" and words[0] in _NOT_REGIONS):
            continue
        if _PRODUCT.search(m.group(1)):
            continue
        region = m.group(1)
    return Entities(product, topics[-1].lower() if topics else None, region)


def _refers_back(text: str) -> bool:
    if _POSSESSIVE.search(text) or _DEMONSTRATIVE.search(text):
        return True
    return bool(_PRONOUN.search(_DUMMY_IT.sub(" ", text)))


def _noun_phrase_end(words: list[str]) -> int:
    """How many of ``words`` (after "its") form the noun phrase: up to punctuation or a word that starts a clause."""
    n = 0
    for w in words:
        core = w.rstrip("?.!,;:")
        if not core or core.lower() in _NP_END:
            break
        n += 1
        if core != w:  # punctuation closes the phrase
            break
    return max(n, 1)


def _resolve_product(text: str, product: str) -> str:
    """Put the product where the text points back to it; else add it at the end of the question."""
    target = f"the {product}"
    m = _POSSESSIVE.search(text)
    if m:  # "How long is its run-in period?" -> "How long is the run-in period of the GV-4150?"
        rest = text[m.end():]
        words = rest.split(" ")
        n = _noun_phrase_end(words)
        phrase = " ".join(words[:n])
        core = phrase.rstrip("?.!,;:")
        tail = phrase[len(core):]
        after = " ".join(words[n:])
        return text[: m.start()] + f"the {core} of {target}{tail}" + (" " + after if after else "")
    m = _DEMONSTRATIVE.search(text)
    if m:
        return text[: m.start()] + target + text[m.end():]
    cleaned = _DUMMY_IT.sub(lambda d: d.group(0).replace("it", "\0").replace("It", "\1"), text)
    m = _PRONOUN.search(cleaned)
    if m:
        return text[: m.start()] + target + text[m.end():]
    return _append(text, f"for {target}")


def _append(text: str, phrase: str) -> str:
    stripped = text.rstrip()
    core = stripped.rstrip("?.!")
    return f"{core} {phrase}{stripped[len(core):]}"


# Words that say nothing about a product's situation ("I installed a GV-4150.", "We run a ... in our plant.").
_SITUATION_STOP = frozenset("""
i we you our my your a an the this that it its in on at of for to and or also just have has had got is are was were be
been run runs running use uses using used installed install bought buy ordered order plant site factory here there
""".split())


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rewrite_query(messages: list[dict[str, Any]]) -> tuple[str, bool]:
    """The standalone question of a conversation's last user message, and whether it was rewritten.

    A follow-up that points back ("its", "it", "this one", "the same", ...) or names no product, policy or
    region while an earlier turn did gets the entity of the most recent earlier turn that named one (a user's, or
    an assistant's answer naming a single product): "I installed a GV-4150." + "How long is its run-in period?"
    -> "How long is the run-in period of the GV-4150?". A question that names its own product is left as it is;
    so is the first question of a conversation. Deterministic, no model: one conversation, one query.
    """
    question = last_user_text(messages)
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        return question, False
    earlier = [m for m in messages[:last_user] if m.get("role") in ("user", "assistant")]
    if not earlier:
        return question, False
    now = find_entities(question)
    refers = _refers_back(question)
    if now.product:
        return question, False  # self-contained: it names its own product

    def latest(kind: str) -> str | None:
        for m in reversed(earlier):
            text = message_text(m.get("content"))
            got = getattr(find_entities(text), kind)
            # An answer may quote several products (its sources): it settles the reference only when it names one.
            if got and (m["role"] == "user" or kind != "product" or len(set(_PRODUCT_CODE.findall(text))) == 1):
                return got
        return None

    query = question
    product = latest("product")
    if product and (refers or not now.any()):
        query = _resolve_product(query, product)
        # What the customer said about the product ("Our PT-5500 has no output signal since yesterday.") is what
        # "What is the most likely cause?" asks about: carry the latest such statement along.
        for m in reversed(earlier):
            text = message_text(m.get("content")).strip()
            if m["role"] == "user" and text and not text.endswith("?") and \
                    len(set(_PRODUCT_CODE.findall(text))) == 1 and find_entities(text).product == product:
                said = set(_words(text)) - set(_words(product)) - _SITUATION_STOP
                if len(said) >= 3 and not said <= set(_words(query)):
                    query = f"{query} ({text})"
                break
    elif not now.region and (refers or not now.any() or now.topic):
        # A policy follow-up ("And how long is the RMA number valid?") stays with the region asked about.
        region = latest("region")
        topic = now.topic or latest("topic")
        if region and topic:
            if not now.topic:
                query = _append(query, f"under the {topic} policy for {region}")
            else:
                query = _append(query, f"for {region}")
    return query, query != question


# ------------------------------------------------------------------------------------------------ results


@dataclass
class Answer:
    text: str
    model: ModelSpec
    tokens_in: int
    tokens_out: int
    finish_reason: str = "stop"
    backend_ms: float = 0.0
    usage_source: str = "backend"


class ChargesUsage:
    """``add_usage`` for records with ``tokens_in``, ``tokens_out``, ``cost`` and ``usage_source`` (RagResult, the
    gateway's request record)."""

    tokens_in: int
    tokens_out: int
    cost: float
    usage_source: str | None

    def add_usage(self, spec: ModelSpec, tokens_in: int, tokens_out: int, source: str) -> None:
        """Charge one model call; a run that tried several (an answer rejected as ungrounded, then the next tier)
        pays for each. One estimated part makes the whole count an estimate."""
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cost += spec.cost(tokens_in, tokens_out)
        order = (None, "backend", "tokenizer", "estimate")
        self.usage_source = max(self.usage_source, source, key=order.index)


@dataclass
class RagResult(ChargesUsage):
    """One run of a use case on one conversation: what was asked, retrieved, used, answered and what it cost."""

    question: str  # the last user message (redacted)
    query: str  # the standalone question retrieval ran on (after follow-up rewriting)
    rewritten: bool
    # KB words the glossary adds for the customer's words in the query (retrieved on and looked for in sentences)
    expansions: list[list[str]] = field(default_factory=list)
    release: str = ""
    prompt_version: str = ""
    answer_text: str = ""  # what the client gets, the no-answer text included
    answered: bool = False
    model: str | None = None
    route_reason: str = ""
    complexity: str | None = None
    index_version: int = 0
    passages: list[Passage] = field(default_factory=list)  # retrieved
    used: list[Passage] = field(default_factory=list)  # relevant enough to answer from (what the model saw)
    tokens_in: int = 0
    tokens_out: int = 0
    # "backend" (its usage), "tokenizer" or "estimate" (no real count: ~4 characters a token, words for extractive)
    usage_source: str | None = None
    cost: float = 0.0
    latency_ms: float = 0.0
    backend_ms: float | None = None
    finish_reason: str = "stop"
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    guardrail_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sources(self) -> list[Passage]:
        """The passages shown as sources: those answered from, else (nothing relevant) what was retrieved."""
        return self.used or self.passages

    def failures(self) -> str:
        """The backends tried and why each failed: the public reason only (the backend's own error text stays in
        ``error``, for the request log)."""
        return "; ".join(f"{f['model']}: {f.get('public', f['error'])}" for f in self.fallbacks)


class RagError(Exception):
    """The run cannot give the client an answer. ``code``: ``index_unavailable``, ``backend_unavailable``,
    ``backend_error`` or ``guardrail_blocked`` (the answer was withheld by the output guardrail; ``rule`` names
    it). ``result`` holds what ran until then (usage, fallbacks, events)."""

    def __init__(self, code: str, message: str, result: RagResult, *, retry_after: int | None = None,
                 rule: str | None = None):
        super().__init__(message)
        self.code, self.message, self.result = code, message, result
        self.retry_after, self.rule = retry_after, rule


class NoAnswer(Exception):
    """A backend found nothing in the context to answer with (the next tier tries; else "I don't know")."""


# ------------------------------------------------------------------------------------------------ building parts


def build_guardrails(settings: Any, deny_list_path: Path) -> tuple[Guardrails, int]:
    """Guardrails whose PII redactor knows the CRM's contacts, when the RAG assets exported them
    (``gateway/known_people.json``); pattern and heuristic recognizers only until then. Returns them and the
    number of known people."""
    from agenix_assets.core.pii import PiiRedactor
    from agenix_assets.core.rag import load_deny_list

    people = load_deny_list(deny_list_path) or []
    policies = {name: GuardrailPolicy.model_validate(uc.guardrails) for name, uc in settings.use_cases.items()}
    guardrails = Guardrails(policies, default=GuardrailPolicy.model_validate(settings.direct_guardrails),
                            redactor_factory=lambda: PiiRedactor.from_contacts(people))
    return guardrails, len(people)


def query_encoders(full: Callable[[], Any], loaded: Callable[[], Any] | None = None) -> Callable[[str], Any]:
    """``quantize -> encoder`` for retrieval configs: the shared full-precision encoder (``full()``), or an int8
    query encoder (about half the query-embedding time for ~0.3% recall). ``loaded()``: the full encoder if it is
    already built (an encoder given by the caller without ``encode_query`` serves every config)."""

    def encoder_for(quantize: str) -> Any:
        current = loaded() if loaded is not None else None
        if quantize == "none" or current is not None and not hasattr(current, "encode_query"):
            return full()
        from agenix_assets.core.retrieval import default_encoder

        return default_encoder(quantize=quantize)

    return encoder_for


# Keys of a retrieval override that are the use case's settings rather than the retriever's (RetrievalConfig).
USE_CASE_RETRIEVAL_KEYS = ("top_k", "min_relevance")
MAX_RETRIEVAL_OVERRIDES = 4


# ------------------------------------------------------------------------------------------------ the pipeline


def asked_product_missing(query: str, passages: list[Passage]) -> list[str]:
    """The product codes the question names that no passage to answer from is about. A question about a product
    the knowledge base does not hold must get "I don't know", not another product's figure."""
    asked = product_codes(query)
    if not asked or any(p.asked_product for p in passages):
        return []
    return sorted(asked)


def unsupported_sentences(answer: str, passages: list[Passage]) -> str | None:
    """Why a generated answer is not grounded, by the judge-free groundedness measure the evaluation reports
    (core/evaluation.groundedness): each sentence's numbers in the context, most of its content words in one
    passage. A small model that does not know invents plausible prose ("comes in a variety of colours")."""
    from agenix_assets.core.evaluation import groundedness

    g = groundedness(answer, [p.text for p in passages])
    if g.score is None or g.score >= 1.0:
        return None
    return f"sentence not supported by the context: {g.unsupported[0][:120]!r}"


class RagPipeline:
    """The steps of one use case. One instance per use case per process; ``run`` is safe to call concurrently."""

    def __init__(self, use_case: str, settings: UseCaseSettings, index: UseCaseIndex, prompts: PromptBook,
                 router: Router, backends: BackendPool, extractive: Any, registry: ModelRegistry,
                 guardrails: Guardrails, *, pool: Executor | None = None,
                 encoder_for: Callable[[str], Any] | None = None, glossary: Glossary | None = None):
        """``extractive``: the extractive answerer, or a zero-argument callable building it on first use.
        ``pool``: where CPU work (retrieval, the extractive answerer) runs; None: the loop's default executor.
        ``encoder_for(quantize)``: the query encoder a retrieval override asks for (default: the index's)."""
        self.use_case = use_case
        self.settings = settings
        self.index = index
        self.prompts = prompts
        self.router = router
        self.backends = backends
        self._extractive = extractive
        self.registry = registry
        self.guardrails = guardrails
        self.pool = pool
        self.encoder_for = encoder_for or (lambda quantize: index.encoder)
        self._overrides: OrderedDict[str, UseCaseIndex] = OrderedDict()
        self.glossary = glossary if glossary is not None else Glossary()

    @classmethod
    def from_config(cls, config_dir: Path | str, home: Path | str, use_case: str, encoder: Any = None,
                    environment: str | None = None) -> RagPipeline:
        """The pipeline the gateway would serve ``use_case`` with, from the config folder and ``$AGENIX_HOME``
        (its index versions and the CRM deny list), without keys, request logs or HTTP. Backends are reached at
        the registry's ``base_url``s. Close it with :meth:`close`."""
        from .extractive import ExtractiveAnswerer
        from .prompts import load_prompt_book

        config = GatewayConfig.load(Path(config_dir), environment)
        settings = config.settings.use_cases.get(use_case)
        if settings is None:
            raise ConfigError(f"{config.settings_path}: use_cases: no use case {use_case!r} "
                              f"(known: {sorted(config.settings.use_cases)})")
        holder: dict[str, Any] = {"encoder": encoder}

        def full() -> Any:
            if holder["encoder"] is None:
                from agenix_assets.core.retrieval import configure_query_threads, default_encoder

                configure_query_threads()
                holder["encoder"] = default_encoder()
            return holder["encoder"]

        encoder_for = query_encoders(full, lambda: holder["encoder"])
        index = UseCaseIndex.from_config(use_case, settings, config.config_dir, Path(home) / "index", encoder_for)
        guardrails, _ = build_guardrails(config.settings, Path(home) / "gateway" / "known_people.json")
        return cls(use_case, settings, index, load_prompt_book(config.resolve(settings.prompts)),
                   Router(config.registry, config.settings.routing), BackendPool(),
                   lambda: ExtractiveAnswerer(full()), config.registry, guardrails, encoder_for=encoder_for,
                   glossary=use_case_glossary(config.config_dir, settings))

    async def close(self) -> None:
        await self.backends.close()

    def warm_up(self, index_version: int | str = "live") -> None:
        """Load what a first run would otherwise wait for (and count in its latency): the PII engine, the index
        version and its query encoder, the extractive answerer's encoder. IndexUnavailable when it cannot be served."""
        self.guardrails.warm_up()
        self.index.load(index_version)
        encoder = self.index.encoder
        if hasattr(encoder, "encode_query"):
            encoder.encode_query("warm up")
        self.extractive  # noqa: B018 - builds it

    @property
    def extractive(self) -> Any:
        if callable(self._extractive) and not hasattr(self._extractive, "answer"):
            self._extractive = self._extractive()
        return self._extractive

    async def _cpu(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -------------------------------------------------------------- 1. input guardrails

    def guard(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
              tool_choice: Any = None) -> InputResult:
        """Redacted copies of the messages, or GuardrailViolation (nothing else has run)."""
        return self.guardrails.check_input(self.use_case, messages, tools, tool_choice)

    # -------------------------------------------------------------- 2. follow-ups

    def rewrite(self, messages: list[dict[str, Any]]) -> tuple[str, bool]:
        """The standalone question to retrieve on and whether it differs from the last user message."""
        return rewrite_query(messages)

    def expand(self, query: str) -> list[list[str]]:
        """The knowledge base's words for the customer's words in ``query`` (the use case's glossary): one group
        per glossary entry."""
        return self.glossary.expansions(without_negated(query))

    def out_of_scope(self, query: str) -> str | None:
        """The name of the use case's ``out_of_scope`` rule the question falls under, or None."""
        return next((rule.name for rule in self.settings.out_of_scope if rule.applies(query)), None)

    # -------------------------------------------------------------- 3. retrieval

    def index_for(self, retrieval: dict[str, Any] | None) -> UseCaseIndex:
        """Production's index, or one retrieving with ``retrieval`` laid over production's settings. Loaded
        retrievers are cached per (index version, settings hash): the last few overrides stay resident."""
        if not retrieval:
            return self.index
        key = hashlib.sha256(json.dumps(retrieval, sort_keys=True, default=str).encode()).hexdigest()[:16]
        got = self._overrides.get(key)
        if got is not None:
            self._overrides.move_to_end(key)
            return got
        from agenix_assets.core.retrieval import RetrievalConfig

        uc_part = {k: retrieval[k] for k in USE_CASE_RETRIEVAL_KEYS if k in retrieval}
        rag_part = {**dict(self.index.rag.retrieval), **{k: v for k, v in retrieval.items() if k not in uc_part}}
        try:
            settings = UseCaseSettings.model_validate({**self.settings.model_dump(), **uc_part})
            config = RetrievalConfig.model_validate({"domain_key": "data_domain", **rag_part})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"retrieval override for use case {self.use_case!r}: {problems}") from None
        rag = self.index.rag.model_copy(update={"retrieval": rag_part})
        got = UseCaseIndex(self.use_case, settings, rag, self.index.index_root,
                           self.encoder_for(config.query_quantization), namespace=self.index.namespace, keep_loaded=1)
        self._overrides[key] = got
        while len(self._overrides) > MAX_RETRIEVAL_OVERRIDES:
            self._overrides.popitem(last=False)
        return got

    async def retrieve(self, query: str, release: Release, allowed_domains: tuple[str, ...] | None,
                       retrieval: dict[str, Any] | None = None) -> tuple[int, list[Passage], list[Passage]]:
        """(index version, passages retrieved, the relevant ones). IndexUnavailable when the release's index
        version cannot be served."""
        index = self.index_for(retrieval)
        idx, passages = await self._cpu(index.retrieve, query, release.index_version, allowed_domains)
        return idx.version, passages, index.relevant(passages)

    # -------------------------------------------------------------- 4. routing

    def route(self, release: Release, query: str, now: float | None = None) -> RouteDecision:
        """The backends to try, in order. NoBackendAvailable / LookupError (the release's model is not enabled)."""
        uc = self.settings
        return self.router.route(
            release.model, text=query, prompt_tokens=estimate_tokens(query) + uc.context_chars // 4,
            quality_tier=uc.quality_tier, simple_quality_tier=uc.simple_quality_tier, needs_context=True,
            now=time.monotonic() if now is None else now)

    # -------------------------------------------------------------- 5. prompt

    def render(self, spec: ModelSpec, release: Release, question: str, passages: list[Passage],
               user_params: dict[str, Any]) -> tuple[str | None, list[dict] | None, dict[str, Any]]:
        """(completion prompt, chat messages, backend parameters) of the release's prompt version for ``spec``;
        the extractive tier needs none."""
        if spec.kind == "extractive":
            return None, None, {}
        version = self.prompts.get(release.prompt_version)
        contexts = [p.text for p in passages]
        budget = min(self.settings.context_chars, spec.context_length * 3)
        if spec.prompt_style == "completion":
            prompt, params = version.render_completion(question, contexts, max_context_chars=budget)
            messages = None
        else:
            messages, params = version.render_chat(question, contexts, max_context_chars=budget)
            prompt = None
        params = dict(params)
        for k in ("temperature", "top_p", "seed"):
            if k in user_params:
                params[k] = user_params[k]
        if user_params.get("max_tokens"):
            params["max_tokens"] = min(int(user_params["max_tokens"]), int(params.get("max_tokens") or 1024))
        return prompt, messages, params

    def no_answer(self, release: Release) -> str:
        return self.prompts.get(release.prompt_version).no_answer

    # -------------------------------------------------------------- 6. answer

    async def call_model(self, spec: ModelSpec, *, prompt: str | None, messages: list[dict] | None,
                         params: dict[str, Any], passages: list[Passage], question: str,
                         expansions: Sequence[Sequence[str]] = ()) -> Answer:
        """One backend call. BackendError when it fails; NoAnswer when the extractive tier finds no sentence."""
        t0 = time.perf_counter()
        if spec.kind == "extractive":
            got = await self._cpu(partial(self.extractive.answer, expansions=expansions), question,
                                  [(p.document_id, p.title, p.body, p.relevance) for p in passages])
            if got is None:
                raise NoAnswer()
            # No LLM ran: the answerer's word counts stand in for tokens, and say so.
            usage = got.usage or {}
            tin = int(usage.get("prompt_tokens") or estimate_tokens(question))
            tout = int(usage.get("completion_tokens") or estimate_tokens(got.text))
            return Answer(got.text, spec, tin, tout, backend_ms=(time.perf_counter() - t0) * 1000,
                          usage_source="estimate")
        if spec.prompt_style == "completion":
            body = {"model": spec.upstream_name, "prompt": prompt, **params}
            data = await self.backends.post_json(spec, "/completions", body)
            text = (data.get("choices") or [{}])[0].get("text", "")
            finish = (data.get("choices") or [{}])[0].get("finish_reason") or "stop"
        else:
            body = {"model": spec.upstream_name, "messages": messages, **params}
            data = await self.backends.post_json(spec, "/chat/completions", body)
            choice = (data.get("choices") or [{}])[0]
            text = (choice.get("message") or {}).get("content") or ""
            finish = choice.get("finish_reason") or "stop"
        usage = data.get("usage") or {}
        source = "backend" if "prompt_tokens" in usage and "completion_tokens" in usage else "estimate"
        tin = int(usage.get("prompt_tokens") or estimate_tokens(prompt or orjson.dumps(messages).decode()))
        tout = int(usage.get("completion_tokens") or estimate_tokens(text))
        return Answer(text.strip(), spec, tin, tout, finish, (time.perf_counter() - t0) * 1000, source)

    async def answer(self, decision: RouteDecision, release: Release, question: str, passages: list[Passage],
                     params: dict[str, Any], result: RagResult, *, placeholders: Iterable[str] = (),
                     request_id: str | None = None) -> Answer:
        """The first checked answer along the decision's chain (its text output-scanned). Failures, answers
        rejected by ``check`` and their usage are recorded in ``result``. NoAnswer when every backend that ran
        found none; RagError ``backend_error`` when the backends failed; ``guardrail_blocked`` when the output
        guardrail withholds the answer."""
        last: Exception | None = None
        for spec in decision.chain:
            if not self.router.breaker.allow(spec.name, time.monotonic()):
                result.fallbacks.append({"model": spec.name, "error": "circuit open"})
                continue
            try:
                prompt, messages, call_params = self.render(spec, release, question, passages, params)
                ans = await self.call_model(spec, prompt=prompt, messages=messages, params=call_params,
                                            passages=passages, question=question, expansions=result.expansions)
            except BackendError as exc:
                self.router.breaker.failure(spec.name, time.monotonic())
                log.warning("request %s: %s", request_id, exc)
                result.fallbacks.append({"model": spec.name, "error": str(exc)[:300], "public": exc.public})
                last = exc
                if not exc.retryable:
                    break
                continue
            except NoAnswer:
                result.fallbacks.append({"model": spec.name, "error": "no sentence relevant enough"})
                last = NoAnswer()
                if self.settings.no_answer_is_final:
                    break
                continue
            self.router.breaker.success(spec.name)
            try:
                text, problem = self.check(ans, question, passages, placeholders, result)
            except GuardrailViolation as exc:
                result.add_usage(spec, ans.tokens_in, ans.tokens_out, ans.usage_source)  # generated, so paid for
                result.model = spec.name
                raise RagError("guardrail_blocked", exc.message, result, rule=exc.rule) from exc
            if problem is not None:
                result.add_usage(spec, ans.tokens_in, ans.tokens_out, ans.usage_source)
                # The backend works but this answer is not grounded: try the next tier, else say "I don't know".
                result.fallbacks.append({"model": spec.name, "error": f"ungrounded answer: {problem}"})
                last = NoAnswer()
                continue
            ans.text = text
            return ans
        if isinstance(last, NoAnswer):
            raise last
        raise RagError("backend_error", f"every backend failed for this request: {result.failures()}",
                       result) from last

    # -------------------------------------------------------------- 7. checks

    def check(self, ans: Answer, question: str, passages: list[Passage], placeholders: Iterable[str] = (),
              result: RagResult | None = None) -> tuple[str | None, str | None]:
        """(text as the client may see it, None) or (None, why it is not grounded). A generated (LLM) answer
        must be grounded in the passages; the output guardrail then scans it (GuardrailViolation when its policy
        blocks). Events go to ``result``."""
        events = result.guardrail_events if result is not None else []
        problem = None
        if ans.model.kind == "openai":
            problem = grounding_problem(ans.text, question, passages) or unsupported_sentences(ans.text, passages)
        if problem is not None:
            events.append({"stage": "output", "rule": "grounding", "action": "rejected",
                           "detail": {"model": ans.model.name, "problem": problem}})
            return None, problem
        try:
            out = self.guardrails.check_output(self.use_case, ans.text, placeholders=placeholders)
        except GuardrailViolation as exc:
            events.extend(e.to_dict() for e in exc.events)
            raise
        events.extend(e.to_dict() for e in out.events)
        return out.text, None

    # -------------------------------------------------------------- the whole run

    async def run(self, release: Release, messages: list[dict[str, Any]],
                  allowed_domains: tuple[str, ...] | None = None, params: dict[str, Any] | None = None,
                  retrieval: dict[str, Any] | None = None, *, guarded: InputResult | None = None,
                  request_id: str | None = None) -> RagResult:
        """Answer the conversation's last user message with ``release``.

        ``allowed_domains``: data domains retrieval may read (None: all). ``params``: the client's sampling
        parameters (temperature, top_p, seed, max_tokens). ``retrieval``: retrieval settings laid over
        production's (a candidate's). ``guarded``: the input guardrails' result when the caller already ran
        ``guard`` (the gateway, and the shadow release on the same request); else they run here and a blocked
        request raises GuardrailViolation. Raises RagError when no answer can be given (see its codes)."""
        t0 = time.perf_counter()
        if guarded is None:
            guarded = self.guard(messages)
        question = last_user_text(guarded.messages)
        query, rewritten = self.rewrite(guarded.messages)
        result = RagResult(question=question, query=query, rewritten=rewritten, expansions=self.expand(query),
                           release=release.name,
                           prompt_version=release.prompt_version,
                           guardrail_events=[e.to_dict() for e in guarded.events])
        try:
            await self._run(result, release, allowed_domains, params or {}, retrieval, guarded.placeholders, request_id)
        finally:
            result.latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        return result

    def _no_answer(self, result: RagResult, release: Release, reason: str) -> None:
        """Answer with the prompt's no-answer text before any model ran."""
        result.route_reason = reason
        result.tokens_in, result.usage_source = estimate_tokens(result.query), "estimate"  # no model read it
        result.answer_text = self.no_answer(release)

    async def _run(self, result: RagResult, release: Release, allowed_domains: tuple[str, ...] | None,
                   params: dict[str, Any], retrieval: dict[str, Any] | None, placeholders: Iterable[str],
                   request_id: str | None) -> None:
        query = result.query
        scope = self.out_of_scope(query)
        if scope is not None:
            self._no_answer(result, release, f"out of the use case's scope ({scope}) -> no answer")
            return
        search = with_expansions(query, result.expansions)
        try:
            result.index_version, result.passages, relevant = await self.retrieve(search, release, allowed_domains,
                                                                                   retrieval)
        except IndexUnavailable as exc:
            # The reason names the index folder on the server: logged (and on /readyz for admin keys), not returned.
            log.warning("request %s: %s", request_id, exc)
            raise RagError("index_unavailable", f"use case {self.use_case!r} has no servable index version yet",
                           result) from exc
        missing = asked_product_missing(query, relevant)
        # "How long is its run-in period?" as the first message: whose? Any product's figure would be a guess.
        # Only a possessive: "it" may point within the question ("when do we get our unit back? ... it").
        dangling = (not result.rewritten and bool(_POSSESSIVE.search(query)) and not find_entities(query).any()
                    and not product_codes(query))
        if not relevant or missing or dangling:
            self._no_answer(result, release, (
                "nothing relevant retrieved -> no answer" if not relevant else
                f"the asked product ({', '.join(missing)}) is in no relevant passage -> no answer" if missing else
                "the question refers back to something the conversation never named -> no answer"))
            return
        result.used = relevant
        try:
            decision = self.route(release, query)
        except NoBackendAvailable as exc:
            raise RagError("backend_unavailable", str(exc), result, retry_after=exc.retry_after_s) from exc
        except LookupError as exc:
            raise RagError("backend_unavailable", f"release {release.name}: model {release.model!r} is not enabled",
                           result) from exc
        result.route_reason, result.complexity = decision.reason, decision.complexity
        user_params = {k: params[k] for k in ("temperature", "top_p", "seed", "max_tokens") if k in params}
        try:
            ans = await self.answer(decision, release, query, relevant, user_params, result,
                                    placeholders=placeholders, request_id=request_id)
        except NoAnswer:
            result.model, result.route_reason = None, decision.reason + "; no backend found an answer in the context"
            if result.usage_source is None:
                result.tokens_in, result.usage_source = estimate_tokens(query), "estimate"
            result.answer_text = self.no_answer(release)
            return
        result.model, result.backend_ms = ans.model.name, round(ans.backend_ms, 3)
        result.add_usage(ans.model, ans.tokens_in, ans.tokens_out, ans.usage_source)
        if ans.model.name != decision.model.name:
            result.route_reason = decision.reason + f"; fell back to {ans.model.name}"
        result.answer_text, result.answered, result.finish_reason = ans.text, True, ans.finish_reason


__all__ = ["Answer", "Entities", "NoAnswer", "RagError", "RagPipeline", "RagResult", "build_guardrails",
           "estimate_tokens", "find_entities", "last_user_text", "message_text", "query_encoders", "rewrite_query"]
