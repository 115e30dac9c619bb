"""Metrics of a release's answers against a golden set (core/golden.py), and their aggregation and comparison.

Plain functions, no Dagster, no serving import, no model: the evaluation runner (serving/evaluation.py) sends each
golden question through the gateway's own RAG pipeline, records one *result dict* per call (fields below), and
:func:`summarise` turns the list into the figures an eval report shows; :func:`compare` and :func:`regressions`
hold a candidate's figures against production's.

Per-call result dict (the runner fills what it has; missing keys count as unknown, not as zero):

=================  ==========================================================================================
``id``             the golden item's id, or the conversation's id for a turn
``kind``           ``"qa"`` (a golden item) or ``"turn"`` (one turn of a golden conversation)
``turn``           turn index (0-based), turns only
``tier``           the tier or route that answered (e.g. ``extractive``, ``small``), None when refused upstream
``model``          the model that answered, if any
``answerable``     the item's ``answerable`` (qa)
``split``          ``dev`` / ``holdout`` (qa)
``phrasing``       ``generator`` / ``paraphrase`` (qa)
``correct``        :func:`answer_correct` (qa); None for a retrieval-only item
``refused``        :func:`is_refusal` of the answer text
``passed``         :func:`check_turn` passed (turns)
``retrieved``      document ids in rank order (as retrieved, duplicates allowed)
``relevant``       the item's expected documents (qa)
``groundedness``   :func:`groundedness` score, None when the answer had no sentence to check
``pii``            :func:`pii_leaks` findings (list of dicts; None: not checked)
``question``       the question or user turn; ``answer``: the answer text (for the report's examples)
``failures``       :func:`check_turn` reasons (turns); ``unsupported``: :func:`groundedness` unsupported sentences
``latency_ms``     end-to-end latency of the call
``tokens_in``      prompt tokens; ``tokens_out``: completion tokens
``cost``           cost of the call in the gateway's currency unit
=================  ==========================================================================================
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "Groundedness",
    "TurnCheck",
    "answer_correct",
    "check_turn",
    "compare",
    "fact_present",
    "groundedness",
    "is_refusal",
    "item_result",
    "ndcg_at_k",
    "normalise",
    "percentile",
    "pii_leaks",
    "recall_at_k",
    "reciprocal_rank",
    "regressions",
    "summarise",
    "turn_result",
]


# ---------------------------------------------------------------- retrieval


def _distinct(ids: Iterable[str]) -> list[str]:
    """Ids in first-seen order: several chunks of one document count as one retrieved document."""
    seen: dict[str, None] = {}
    for i in ids:
        seen.setdefault(i, None)
    return list(seen)


def _relevant_set(relevant_ids: Iterable[str]) -> set[str]:
    relevant = set(relevant_ids)
    if not relevant:
        raise ValueError("no relevant documents: recall, MRR and nDCG are undefined")
    return relevant


def recall_at_k(retrieved_ids: Sequence[str], relevant_ids: Iterable[str], k: int) -> float:
    """Fraction of the relevant documents among the first ``k`` distinct retrieved documents."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    relevant = _relevant_set(relevant_ids)
    return len(relevant.intersection(_distinct(retrieved_ids)[:k])) / len(relevant)


def reciprocal_rank(retrieved_ids: Sequence[str], relevant_ids: Iterable[str], k: int | None = None) -> float:
    """1 / rank of the first relevant document among the distinct retrieved ones (0 if none in the first ``k``)."""
    relevant = _relevant_set(relevant_ids)
    for rank, doc in enumerate(_distinct(retrieved_ids)[:k], 1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(retrieved_ids: Sequence[str], relevant_ids: Iterable[str], k: int) -> float:
    """Normalised discounted cumulative gain at ``k`` with binary relevance (gain 1 / log2(rank + 1)).

    The ideal ranking puts min(k, number of relevant documents) relevant documents first.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    relevant = _relevant_set(relevant_ids)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, doc in enumerate(_distinct(retrieved_ids)[:k], 1) if doc in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


# ---------------------------------------------------------------- answers

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"), "-")
# A thousands separator: between a digit and a group of exactly three digits (1,500 / 1 500 / 1'500 / 1.500 is not
# touched: a dot is a decimal point here, as in the knowledge base).
_THOUSANDS = re.compile(r"(?<=\d)[,'\u2019\u00a0\u202f\u2009](?=\d{3}(?!\d))")
_MARKUP = re.compile(r"\*\*|__|`")
# Trailing zeros of a decimal: "1945.0" is "1945", "0.50" is "0.5".
_TRAILING_ZEROS = re.compile(r"(?<![\d.])(\d+)\.(\d*?)0+(?![\d.])")
_CITATION = re.compile(r"\s*\[\d+(?:\s*[,;-]\s*\d+)*\]")


def normalise(text: str) -> str:
    """Text as answers are compared: thousands separators and a decimal's trailing zeros dropped, Unicode
    compatibility forms folded (NFKC), lower case, every Unicode dash and minus as ``-``, bold/code markup dropped,
    whitespace collapsed to one space.
    """
    text = _THOUSANDS.sub("", text)
    text = _TRAILING_ZEROS.sub(lambda m: m.group(1) + (f".{m.group(2)}" if m.group(2) else ""), text)
    text = unicodedata.normalize("NFKC", text).translate(_DASHES).lower()
    text = _MARKUP.sub("", text)
    return " ".join(text.split())


def _unit_gap(a: str, b: str) -> bool:
    """Whether a space between these two characters is optional: between a number and its unit ("15 %", "IP 65")."""
    return (a.isdigit() and (b.isalpha() or b in "%°")) or ((a.isalpha() or a in "°") and b.isdigit())


def _token_pattern(token: str) -> str:
    out = [re.escape(token[0])]
    for a, b in zip(token, token[1:]):
        out.append((r"\s*" if _unit_gap(a, b) else "") + re.escape(b))
    return "".join(out)


def _fact_pattern(fact: str) -> re.Pattern[str] | None:
    tokens = normalise(fact).split()
    if not tokens:
        return None
    parts = [_token_pattern(tokens[0])]
    for prev, tok in zip(tokens, tokens[1:]):
        # "145 Nm" also matches "145Nm"; words stay separate words.
        parts.append(r"\s*" if prev[-1].isdigit() or tok[0].isdigit() else r"\s+")
        parts.append(_token_pattern(tok))
    body = "".join(parts)
    first, last = tokens[0][0], tokens[-1][-1]
    # A number matches only as a whole number: "60" is not in "600", "160" or "0.60", "6" not in "6.5".
    before = (r"(?<!\w)" if first.isalnum() else "") + (r"(?<!\d[.,])" if first.isdigit() else "")
    after = (r"(?!\w)" if last.isalnum() else "") + (r"(?![.,]\d)" if last.isdigit() else "")
    return re.compile(before + body + after)


def fact_present(answer: str, fact: str) -> bool:
    """Whether ``answer`` states ``fact``: both :func:`normalise`-d, the fact found as a whole (a number or word in
    it is not part of a longer number or word), whitespace between a number and its unit optional ("15%" ~
    "15 %", "145 Nm" ~ "145Nm").
    """
    pattern = _fact_pattern(fact)
    if pattern is None:
        raise ValueError("an empty fact cannot be checked")
    return pattern.search(normalise(_CITATION.sub("", answer))) is not None


# Openings of a refusal in a model's own words, besides the use case's no-answer text.
REFUSAL_OPENINGS = ("i don't know", "i do not know", "i'm not sure", "i am not sure", "i cannot answer",
                    "i can't answer", "i could not find", "i couldn't find", "i don't have", "i do not have",
                    "i'm sorry, but i", "sorry, i", "the knowledge base has nothing", "the knowledge base does not",
                    "the context does not", "there is no information")


def is_refusal(text: str, no_answer_text: str) -> bool:
    """Whether the answer declines to answer: it contains the use case's no-answer text (``no_answer`` of its
    prompt) or opens with one of :data:`REFUSAL_OPENINGS`. Straight and curly apostrophes count the same.
    """
    answer = normalise(_CITATION.sub("", text)).replace("\u2019", "'")
    if not answer:
        return True
    own = normalise(no_answer_text).replace("\u2019", "'")
    return (bool(own) and own in answer) or answer.startswith(REFUSAL_OPENINGS)


def answer_correct(item: Any, answer_text: str, no_answer_text: str) -> bool | None:
    """Whether an answer is right for a golden item (core/golden.py ``GoldenItem``).

    Answerable: every expected fact is present (:func:`fact_present`) and the answer is not a refusal.
    Unanswerable: the answer is a refusal (:func:`is_refusal`). None for a retrieval-only item (answerable, no
    expected facts), which cannot be judged on its answer.
    """
    refused = is_refusal(answer_text, no_answer_text)
    if not item.answerable:
        return refused
    if not item.expected_facts:
        return None
    return not refused and all(fact_present(answer_text, f) for f in item.expected_facts)


@dataclass(frozen=True)
class TurnCheck:
    passed: bool
    failures: list[str] = field(default_factory=list)  # one reason per unmet expectation


def check_turn(expect: Any, answer_text: str, cited_documents: Iterable[str], no_answer_text: str) -> TurnCheck:
    """One conversation turn against its expectation (core/golden.py ``TurnExpectation``).

    ``must_include``: each present (:func:`fact_present`); ``must_not_include``: none present; ``must_refuse``: the
    answer is a refusal, otherwise it must not be one when it must include or cite something; ``must_cite``: each
    document id among ``cited_documents`` (the documents the answer was generated from).
    """
    failures = []
    refused = is_refusal(answer_text, no_answer_text)
    if expect.must_refuse and not refused:
        failures.append("must refuse, but answered")
    if not expect.must_refuse and refused and (expect.must_include or expect.must_cite):
        failures.append("refused, but must answer")
    failures += [f"missing {fact!r}" for fact in expect.must_include if not fact_present(answer_text, fact)]
    failures += [f"must not include {bad!r}" for bad in expect.must_not_include if fact_present(answer_text, bad)]
    cited = set(cited_documents)
    failures += [f"does not cite {doc}" for doc in expect.must_cite if doc not in cited]
    return TurnCheck(not failures, failures)


# ---------------------------------------------------------------- groundedness

_STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers him his
how i if in into is it its itself just me more most my no nor not of off on once only or other our ours out over own
please same she should so some such than that the their theirs them then there these they this those through to too
under until up us very was we were what when where which while who whom why will with would you your yours
hello hi thanks thank sure glad happy help hope regards
""".split())
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# A sentence is supported when at least this fraction of its content words appear in one passage.
CONTENT_WORD_SUPPORT = 0.6


def _stem(word: str) -> str:
    """A deliberately small suffix stripper: enough for "periods"/"period", "installed"/"install"."""
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: len(word) - len(suffix)] + repl
    return word


def _content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text) if w not in _STOPWORDS}


def _numbers(text: str) -> set[str]:
    return set(_NUMBER.findall(text))


@dataclass(frozen=True)
class Groundedness:
    """``score``: supported / checked sentences, None when no sentence could be checked (e.g. a refusal)."""

    score: float | None
    supported: int
    checked: int
    unsupported: list[str] = field(default_factory=list)


def groundedness(answer: str, contexts: Sequence[str]) -> Groundedness:
    """How much of an answer the retrieved context supports, without a judge model.

    The answer is split into sentences (``[n]`` citations removed). A sentence with neither a number nor a content
    word (stopwords removed) is not checked. A checked sentence is supported when every number in it appears in the
    context (any passage) and at least :data:`CONTENT_WORD_SUPPORT` of its content words (crudely stemmed) appear in
    one passage. Text is compared :func:`normalise`-d.
    """
    passages = [normalise(c) for c in contexts]
    context_numbers = set().union(*(_numbers(p) for p in passages)) if passages else set()
    passage_words = [_content_words(p) for p in passages]
    supported, checked, unsupported = 0, 0, []
    for raw in _SENTENCE_END.split(_CITATION.sub("", answer)):
        sentence = raw.strip()
        text = normalise(sentence)
        numbers, words = _numbers(text), _content_words(text)
        if not numbers and not words:
            continue
        checked += 1
        numbers_ok = numbers <= context_numbers
        words_ok = not words or any(len(words & pw) >= CONTENT_WORD_SUPPORT * len(words) for pw in passage_words)
        if numbers_ok and words_ok:
            supported += 1
        else:
            unsupported.append(sentence)
    return Groundedness(supported / checked if checked else None, supported, checked, unsupported)


# ---------------------------------------------------------------- PII


def pii_leaks(answer_text: str, detector: Any) -> list[dict[str, Any]]:
    """PII the answer shows, found by the platform's redactor (core/pii.py ``PiiRedactor``: build it once, e.g.
    ``PiiRedactor.from_contacts(known_people)``, and pass it for every answer). Placeholders such as ``<PERSON_1>``
    are masked values, not leaks. Each finding: ``{"type", "text", "start", "end"}``.
    """
    spans = detector.contains_pii(answer_text)
    return [{"type": s.type, "text": s.text, "start": s.start, "end": s.end} for s in spans]


# ---------------------------------------------------------------- per-call results


def item_result(item: Any, answer_text: str, no_answer_text: str, *, retrieved: Sequence[str] = (),
                contexts: Sequence[str] = (), detector: Any = None, tier: str | None = None,
                model: str | None = None, latency_ms: float | None = None, tokens_in: int | None = None,
                tokens_out: int | None = None, cost: float | None = None) -> dict[str, Any]:
    """The result dict of one golden item's answer (module docstring), every judgement made here.

    ``retrieved``: document ids in rank order; ``contexts``: the passage texts the answer was generated from (for
    :func:`groundedness`; a refusal is not scored); ``detector``: a PII redactor for :func:`pii_leaks` (None: not
    checked, ``pii`` is None).
    """
    refused = is_refusal(answer_text, no_answer_text)
    grounded = groundedness(answer_text, contexts) if contexts and not refused else None
    return {
        "id": item.id, "kind": "qa", "tier": tier, "model": model, "answerable": item.answerable,
        "split": item.split, "phrasing": item.phrasing, "question": item.question, "answer": answer_text,
        "expected_facts": list(item.expected_facts), "correct": answer_correct(item, answer_text, no_answer_text),
        "refused": refused, "retrieved": list(retrieved), "relevant": list(item.expected_documents),
        "groundedness": grounded.score if grounded else None,
        "unsupported": list(grounded.unsupported) if grounded else [],
        "pii": pii_leaks(answer_text, detector) if detector is not None else None,
        "latency_ms": latency_ms, "tokens_in": tokens_in, "tokens_out": tokens_out, "cost": cost,
    }


def turn_result(conversation_id: str, turn: int, expect: Any, user: str, answer_text: str, no_answer_text: str, *,
                cited_documents: Sequence[str] = (), retrieved: Sequence[str] = (), contexts: Sequence[str] = (),
                detector: Any = None, tier: str | None = None, model: str | None = None,
                latency_ms: float | None = None, tokens_in: int | None = None, tokens_out: int | None = None,
                cost: float | None = None) -> dict[str, Any]:
    """The result dict of one conversation turn (module docstring), judged with :func:`check_turn`.

    ``cited_documents``: the documents the answer was generated from (``must_cite``).
    """
    refused = is_refusal(answer_text, no_answer_text)
    check = check_turn(expect, answer_text, cited_documents, no_answer_text)
    grounded = groundedness(answer_text, contexts) if contexts and not refused else None
    return {
        "id": conversation_id, "kind": "turn", "turn": turn, "tier": tier, "model": model, "question": user,
        "answer": answer_text, "passed": check.passed, "failures": list(check.failures), "refused": refused,
        "retrieved": list(retrieved), "groundedness": grounded.score if grounded else None,
        "unsupported": list(grounded.unsupported) if grounded else [],
        "pii": pii_leaks(answer_text, detector) if detector is not None else None,
        "latency_ms": latency_ms, "tokens_in": tokens_in, "tokens_out": tokens_out, "cost": cost,
    }


# ---------------------------------------------------------------- aggregation


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between closest ranks (numpy's default "linear"
    method): rank ``(n - 1) * p / 100`` in the sorted values. Raises ValueError for no values.
    """
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"p must be within 0..100, got {p}")
    pos = (len(data) - 1) * p / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _mean(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarise(results: Sequence[Mapping[str, Any]], k: int = 5) -> dict[str, Any]:
    """The figures of one evaluation run, from its per-call result dicts (see the module docstring).

    Rates are fractions in 0..1; a figure with nothing to measure is None (e.g. no unanswerable items). Keys:

    * counts: ``calls``, ``items`` (qa results), ``answerable``, ``unanswerable``, ``conversations``, ``turns``;
    * ``accuracy`` (qa results that can be judged), ``accuracy_answerable``, ``refusal_correctness`` (unanswerable
      items refused), ``false_refusal_rate`` (answerable items refused);
    * ``accuracy_by_tier`` {tier: accuracy} (tier "none": nothing answered, e.g. refused before routing),
      ``accuracy_by_split_phrasing`` {"dev_generator", "holdout_generator", "holdout_paraphrase", ...: accuracy of
      the answerable items};
    * ``k``, ``recall_at_k``, ``mrr``, ``ndcg_at_k``: mean over qa results with relevant documents;
    * ``groundedness``: mean score over calls that have one;
    * ``pii_leak_rate``: calls with at least one PII finding / calls checked for PII;
    * ``latency_p50_ms``, ``latency_p95_ms`` (:func:`percentile`), ``tokens_in_per_call``, ``tokens_out_per_call``,
      ``cost_per_call`` (means over the calls that report them);
    * ``conversation_pass_rate`` (conversations whose every turn passed), ``turn_pass_rate``.
    """
    qa = [r for r in results if r.get("kind", "qa") == "qa"]
    turns = [r for r in results if r.get("kind") == "turn"]
    judged = [r for r in qa if r.get("correct") is not None]
    answerable = [r for r in judged if r.get("answerable", True)]
    unanswerable = [r for r in judged if not r.get("answerable", True)]

    def accuracy(rows: Sequence[Mapping[str, Any]]) -> float | None:
        return _mean(bool(r["correct"]) for r in rows) if rows else None

    by_tier: dict[str, list[Mapping[str, Any]]] = {}
    by_split: dict[str, list[Mapping[str, Any]]] = {}
    for r in judged:
        by_tier.setdefault(str(r.get("tier") or "none"), []).append(r)
    for r in answerable:
        by_split.setdefault(f"{r.get('split', 'dev')}_{r.get('phrasing', 'generator')}", []).append(r)

    ranked = [r for r in qa if r.get("relevant")]
    retrieved = [list(r.get("retrieved") or []) for r in ranked]
    conversations: dict[str, bool] = {}
    for t in turns:
        conversations[t["id"]] = conversations.get(t["id"], True) and bool(t.get("passed"))
    latencies = [r["latency_ms"] for r in results if r.get("latency_ms") is not None]
    checked_pii = [r for r in results if r.get("pii") is not None]

    return {
        "calls": len(results),
        "items": len(qa),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "conversations": len(conversations),
        "turns": len(turns),
        "accuracy": accuracy(judged),
        "accuracy_answerable": accuracy(answerable),
        "refusal_correctness": accuracy(unanswerable),
        "false_refusal_rate": _mean(bool(r.get("refused")) for r in answerable) if answerable else None,
        "accuracy_by_tier": {t: accuracy(rows) for t, rows in sorted(by_tier.items())},
        "accuracy_by_split_phrasing": {s: accuracy(rows) for s, rows in sorted(by_split.items())},
        "k": k,
        "recall_at_k": _mean(recall_at_k(d, r["relevant"], k) for d, r in zip(retrieved, ranked)),
        "mrr": _mean(reciprocal_rank(d, r["relevant"], k) for d, r in zip(retrieved, ranked)),
        "ndcg_at_k": _mean(ndcg_at_k(d, r["relevant"], k) for d, r in zip(retrieved, ranked)),
        "groundedness": _mean(r.get("groundedness") for r in results),
        "pii_leak_rate": _mean(bool(r["pii"]) for r in checked_pii) if checked_pii else None,
        "latency_p50_ms": percentile(latencies, 50) if latencies else None,
        "latency_p95_ms": percentile(latencies, 95) if latencies else None,
        "tokens_in_per_call": _mean(r.get("tokens_in") for r in results),
        "tokens_out_per_call": _mean(r.get("tokens_out") for r in results),
        "cost_per_call": _mean(r.get("cost") for r in results),
        "conversation_pass_rate": _mean(conversations.values()) if conversations else None,
        "turn_pass_rate": _mean(bool(t.get("passed")) for t in turns) if turns else None,
    }


# Metrics where a higher value is better, and where a lower one is; everything else in a summary is a count.
HIGHER_IS_BETTER = frozenset({
    "accuracy", "accuracy_answerable", "refusal_correctness", "recall_at_k", "mrr", "ndcg_at_k", "groundedness",
    "conversation_pass_rate", "turn_pass_rate", "accuracy_by_tier", "accuracy_by_split_phrasing"})
LOWER_IS_BETTER = frozenset({
    "false_refusal_rate", "pii_leak_rate", "latency_p50_ms", "latency_p95_ms", "tokens_in_per_call",
    "tokens_out_per_call", "cost_per_call"})
# Unbounded metrics: their tolerance is relative to production's value; rates (0..1) use an absolute tolerance.
RELATIVE = frozenset({"latency_p50_ms", "latency_p95_ms", "tokens_in_per_call", "tokens_out_per_call",
                      "cost_per_call"})


def _metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in summary.items():
        if key not in HIGHER_IS_BETTER | LOWER_IS_BETTER:
            continue
        if isinstance(value, Mapping):
            flat.update({f"{key}.{sub}": v for sub, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = value
    return flat


def compare(candidate_summary: Mapping[str, Any], production_summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per metric both summaries have a number for: ``{"candidate", "production", "delta" (candidate -
    production), "better": "higher"|"lower"}``. Nested figures are flattened (``accuracy_by_tier.extractive``).
    """
    cand, prod = _metrics(candidate_summary), _metrics(production_summary)
    return {
        name: {"candidate": cand[name], "production": prod[name], "delta": cand[name] - prod[name],
               "better": "lower" if name.split(".")[0] in LOWER_IS_BETTER else "higher"}
        for name in sorted(cand.keys() & prod.keys())
    }


def regressions(deltas: Mapping[str, Mapping[str, Any]], tolerance: float | Mapping[str, float] = 0.02
                ) -> list[dict[str, Any]]:
    """The metrics of :func:`compare`'s deltas that got worse by more than the tolerance.

    Direction-aware: latency, tokens, cost, PII leaks and false refusals are better lower. ``tolerance``: one
    number, or per metric (flattened name or its top-level name; default 0.02). It is absolute for rates and
    relative to production's value for latency, tokens and cost (0.1 = 10% slower still passes).
    Each regression: ``{"metric", "candidate", "production", "delta", "tolerance", "worse_by"}``.
    """
    found = []
    for name, d in sorted(deltas.items()):
        top = name.split(".")[0]
        if isinstance(tolerance, Mapping):
            tol = float(tolerance.get(name, tolerance.get(top, 0.02)))
        else:
            tol = float(tolerance)
        worse = d["delta"] if top in LOWER_IS_BETTER else -d["delta"]
        if top in RELATIVE:
            worse = worse / abs(d["production"]) if d["production"] else (math.inf if worse > 0 else 0.0)
        if worse > tol + 1e-12:
            found.append({"metric": name, "candidate": d["candidate"], "production": d["production"],
                          "delta": d["delta"], "tolerance": tol, "worse_by": worse})
    return found
