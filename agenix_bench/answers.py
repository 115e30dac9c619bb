"""`agenix bench answers`: answer accuracy of the support-assistant release on questions asked the way customers ask.

The sample company's fact manifest (``landing/_manifest/facts.jsonl``) holds every fact with the generator's own
question. Customers do not talk like the generator: they name the product by its code only, in lower case, and
wrap the question in their situation ("my gv-4150 is installed - how many hours should it run at reduced
load?"). This benchmark rephrases each fact with the templates below and sends the questions through the
gateway's real request path (the FastAPI app of ``serving.app``, an API key, retrieval, routing, the real
llama.cpp server with the packaged Gemma 3 270M, guardrails), one at a time, and measures

* accuracy: every expected fact string is in the answer (case, whitespace, Unicode forms and thousands
  separators normalised; the number and unit as the fact states them);
* per-tier accuracy: which tier answered (``extractive``, ``gemma-3-270m``, or no answer);
* refusals: one question per product the knowledge base cannot answer (a price, a colour); right = "I don't know";
* latency p50/p95 of the whole request (client side, in-process).

DEV split only: these templates are tuned on; the products used are those whose ``sha1(sku)`` starts with a hex
digit 0-7 (``--split dev``). ``--split heldout`` (8-f) exists to *report* on, never to tune on; the held-out
paraphrases of the golden set (agenix_assets/core/golden.py) are written by someone else, independently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
USE_CASE = "support-assistant"
DEV_DIGITS = frozenset("01234567")

# -- customer phrasings (DEV templates) -------------------------------------------------------------------------
# {sku}: the product code as customers type it (case varies per question); {symptom}: the troubleshooting key's
# symptom in words. Two or three variants per attribute; a question's variant is chosen by a hash of its key.
TEMPLATES: dict[str, list[str]] = {
    "install.bolt_torque": [
        "we are putting in a {sku}, what torque do the bolts need?",
        "torque for the bolts when mounting the {sku}?",
    ],
    "install.clearance": [
        "how much room do I have to leave around my {sku} so the service guys can get at it?",
        "what clearance does the {sku} need around it?",
    ],
    "install.run_in": [
        "my {sku} is installed - how many hours should it run at reduced load?",
        "how long do we run the new {sku} in before full load?",
    ],
    "install.first_inspection": [
        "we just installed a {sku}. when do we have to inspect it the first time?",
        "first inspection of a new {sku}: after how many hours?",
    ],
    "max_pressure": [
        "how much pressure can the {sku} take?",
        "whats the max pressure for {sku}",
    ],
    "flow_rate": [
        "how many litres a minute does the {sku} deliver?",
        "what flow do I get out of a {sku}?",
    ],
    "power": [
        "how big is the motor on the {sku}, in kW?",
        "power rating of the {sku} motor?",
    ],
    "input_power": ["how many kW can I put into the {sku}?"],
    "temperature_range": [
        "can I run the {sku} in the cold, what temperatures is it good for?",
        "temperature limits of the {sku}?",
    ],
    "weight": [
        "how heavy is the {sku}? need it for the crane",
        "what does a {sku} weigh",
    ],
    "maintenance_interval": [
        "how often does my {sku} need servicing?",
        "service interval for the {sku}?",
    ],
    "warranty_months": [
        "my {sku} broke, how long is it under warranty?",
        "what warranty do I get on the {sku}?",
    ],
    "nominal_size": ["what DN is the {sku}?"],
    "kv_value": ["what's the kv of the {sku}?"],
    "measuring_range": ["what range can the {sku} measure?"],
    "accuracy": ["how precise is the {sku}?"],
    "ip_rating": ["what IP rating has the {sku} got?"],
    "bore_diameter": ["what's the bore of the {sku}?"],
    "dynamic_load": ["what dynamic load is the {sku} rated for?"],
    "limiting_speed": ["how fast may the {sku} turn at most?"],
    "troubleshooting.cause": [
        "our {sku} has {symptom}, what is causing it?",
        "why would a {sku} show {symptom}?",
    ],
    "troubleshooting.fix": [
        "{symptom} on our {sku} - how do I fix it?",
        "what should I do about {symptom} on the {sku}?",
    ],
}

# Questions about a product the knowledge base cannot answer (no price lists, colours or delivery dates in it): the
# right answer is the use case's "I don't know" (the gateway's ``answered: false``).
UNANSWERABLE = [
    "what does a {sku} cost?",
    "what colours does the {sku} come in?",
    "who is the sales rep for the {sku} in austria?",
]


@dataclass
class Question:
    key: str
    sku: str
    attribute: str
    question: str
    expected: list[str]
    document_id: str
    generator_question: str
    answerable: bool = True


def product_of(key: str) -> str:
    return key.split(".", 1)[0]


def split_of(sku: str) -> str:
    return "dev" if hashlib.sha1(sku.encode()).hexdigest()[0] in DEV_DIGITS else "heldout"


def _pick(key: str, n: int, salt: str = "") -> int:
    return int(hashlib.sha1((salt + key).encode()).hexdigest()[:8], 16) % n


def customer_questions(facts: Sequence[dict[str, Any]], split: str = "dev", variants: int = 1) -> list[Question]:
    """The customer phrasings of every product fact of ``split`` ("dev", "heldout" or "all"); policy facts and
    attributes without a template are left out. ``variants`` > 1 asks each fact in that many phrasings."""
    out: list[Question] = []
    for f in facts:
        key = f["key"]
        sku = product_of(key)
        if not re.fullmatch(r"[A-Z]{2,}-\d+", sku):
            continue  # policies and other non-product facts
        if split != "all" and split_of(sku) != split:
            continue
        attr = key.split(".", 1)[1]
        symptom = ""
        if attr.startswith("troubleshooting."):
            _, name, kind = attr.split(".")
            symptom = name.replace("-", " ")
            attr = f"troubleshooting.{kind}"
        templates = TEMPLATES.get(attr)
        if not templates:
            continue
        start = _pick(key, len(templates))
        for v in range(min(variants, len(templates))):
            template = templates[(start + v) % len(templates)]
            code = sku.lower() if _pick(key, 2, f"case{v}") else sku
            out.append(Question(key, sku, attr, template.format(sku=code, symptom=symptom), [str(f["answer"])],
                                str(f.get("document_id", "")), str(f.get("question", ""))))
    return out


def unanswerable_questions(questions: Sequence[Question]) -> list[Question]:
    """One question the knowledge base cannot answer per product of ``questions`` (templates in turn)."""
    out = []
    for i, sku in enumerate(sorted({q.sku for q in questions})):
        text = UNANSWERABLE[i % len(UNANSWERABLE)].format(sku=sku.lower() if i % 2 else sku)
        out.append(Question(f"{sku}.unanswerable", sku, "unanswerable", text, [], "", "", answerable=False))
    return out


# -- scoring ----------------------------------------------------------------------------------------------------

_THOUSANDS = re.compile(r"(?<=\d)[,\u202f\u00a0'](?=\d{3}\b)")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case, Unicode compatibility forms, dashes, whitespace and thousands separators normalised."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = t.replace("\u2212", "-").replace("\u2013", "-").replace("\u2011", "-")
    t = _THOUSANDS.sub("", t)
    return _SPACE.sub(" ", t).strip()


def fact_present(fact: str, answer: str) -> bool:
    f = normalise(fact).rstrip(".")
    return bool(f) and f in normalise(answer)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Outcome:
    key: str
    question: str
    expected: list[str]
    answer: str
    tier: str
    correct: bool
    latency_ms: float
    route: str = ""
    sources: list[str] = field(default_factory=list)


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    lat = [o.latency_ms for o in outcomes]
    tiers: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        t = tiers.setdefault(o.tier, {"n": 0, "correct": 0})
        t["n"] += 1
        t["correct"] += int(o.correct)
    for t in tiers.values():
        t["accuracy"] = round(t["correct"] / t["n"], 4) if t["n"] else 0.0
    n = len(outcomes)
    return {
        "n": n,
        "accuracy": round(sum(o.correct for o in outcomes) / n, 4) if n else 0.0,
        "tiers": dict(sorted(tiers.items())),
        "latency_ms": {"p50": round(percentile(lat, 0.5), 1), "p95": round(percentile(lat, 0.95), 1),
                       "mean": round(statistics.fmean(lat), 1) if lat else 0.0, "max": round(max(lat, default=0.0), 1)},
    }


# -- running it through the gateway ------------------------------------------------------------------------------


@contextmanager
def llm_server(url: str | None, log: Callable[[str], None]) -> Iterator[str]:
    """The given OpenAI base URL, or a fresh llama.cpp server with the packaged Gemma for the run."""
    if url:
        yield url
        return
    from serving.model_server import LlamaCppServer, free_port

    with tempfile.TemporaryDirectory(prefix="agenix-bench-llm-") as tmp:
        server = LlamaCppServer(port=free_port(), log_path=Path(tmp) / "llama.log")
        log("starting the packaged Gemma 3 270M ...")
        server.start(timeout=120)
        try:
            yield server.base_url
        finally:
            server.stop()


def run_questions(questions: Sequence[Question], home: Path, config_dir: Path, llm_url: str,
                  log: Callable[[str], None] = print) -> list[Outcome]:
    """Ask every question through the gateway app (a throw-away copy of ``home``; one key; sequential)."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.auth import KeyStore, keys_file

    os.environ["AGENIX_LLM_URL"] = llm_url
    with tempfile.TemporaryDirectory(prefix="agenix-bench-answers-") as tmp:
        work = Path(tmp) / "home"
        shutil.copytree(home, work, symlinks=True, ignore=shutil.ignore_patterns("dagster", "logs"))
        key, _ = KeyStore(keys_file(work)).create("support", use_cases=(USE_CASE,))
        app = create_app(config_dir, work)
        headers = {"Authorization": f"Bearer {key}"}
        outcomes: list[Outcome] = []
        with TestClient(app) as client:
            warm = [{"role": "user", "content": "warm up: what is the warranty?"}]
            client.post("/v1/chat/completions", headers=headers, json={"model": USE_CASE, "messages": warm})
            for i, q in enumerate(questions):
                t0 = time.perf_counter()
                resp = client.post("/v1/chat/completions", headers=headers,
                                   json={"model": USE_CASE, "messages": [{"role": "user", "content": q.question}]})
                ms = (time.perf_counter() - t0) * 1000
                if resp.status_code != 200:
                    raise RuntimeError(f"{q.key}: HTTP {resp.status_code}: {resp.text[:300]}")
                body = resp.json()
                ext = body.get("agenix") or {}
                text = body["choices"][0]["message"]["content"] or ""
                tier = (ext.get("model") or "no_answer") if ext.get("answered") else "no_answer"
                if q.answerable:
                    ok = bool(ext.get("answered")) and all(fact_present(f, text) for f in q.expected)
                else:
                    ok = not ext.get("answered")
                outcomes.append(Outcome(q.key, q.question, q.expected, text, tier, ok, round(ms, 1),
                                        str(ext.get("route") or ""),
                                        [s["document_id"] for s in ext.get("sources") or []]))
                if (i + 1) % 10 == 0:
                    log(f"  {i + 1}/{len(questions)} asked")
    return outcomes


def run(home: Path, config_dir: Path, *, split: str = "dev", variants: int = 1, llm_url: str | None = None,
        limit: int | None = None, unanswerable: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    facts = [json.loads(line) for line in (home / "landing" / "_manifest" / "facts.jsonl").read_text().splitlines()
             if line.strip()]
    questions = customer_questions(facts, split, variants)
    if unanswerable:
        questions += unanswerable_questions(questions)
    if limit:
        questions = questions[:limit]
    log(f"{len(questions)} customer-phrased questions ({split} split) on {len(facts)} facts")
    with llm_server(llm_url, log) as url:
        outcomes = run_questions(questions, home, config_dir, url, log)
    summary = summarise(outcomes)
    by_attr: dict[str, list[Outcome]] = {}
    for q, o in zip(questions, outcomes, strict=True):
        by_attr.setdefault(q.attribute, []).append(o)
    summary["attributes"] = {a: round(sum(o.correct for o in os_) / len(os_), 3) for a, os_ in sorted(by_attr.items())}
    answerable = [o for q, o in zip(questions, outcomes, strict=True) if q.answerable]
    refusals = [o for q, o in zip(questions, outcomes, strict=True) if not q.answerable]
    summary["answerable"] = summarise(answerable) if answerable else None
    summary["refusal_correct"] = round(sum(o.correct for o in refusals) / len(refusals), 4) if refusals else None
    return {
        "benchmark": "answers",
        "split": split,
        "variants": variants,
        "products": sorted({q.sku for q in questions}),
        "home": str(home),
        "config": str(config_dir),
        "summary": summary,
        "misses": [asdict(o) for o in outcomes if not o.correct],
        "outcomes": [asdict(o) for o in outcomes],
    }


def format_table(label: str, summary: dict[str, Any]) -> str:
    lines = [f"{label}: accuracy {summary['accuracy']:.3f} on {summary['n']} questions; "
             f"latency p50 {summary['latency_ms']['p50']:.0f} ms, p95 {summary['latency_ms']['p95']:.0f} ms"]
    for tier, t in summary["tiers"].items():
        lines.append(f"  {tier:<16} {t['correct']:>3}/{t['n']:<3} {t['accuracy']:.3f}")
    if summary.get("answerable"):
        lines.append(f"  answerable only: accuracy {summary['answerable']['accuracy']:.3f}; "
                     f"refusals right: {summary['refusal_correct']}")
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path, label: str) -> None:
    """Merge this run into ``path`` under ``runs.<label>`` (so before/after sit side by side in one file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {"benchmark": "answers", "runs": {}}
    slim = dict(report)
    slim.pop("outcomes", None)
    data["runs"][label] = slim
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
