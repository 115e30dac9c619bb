"""The sample-company generator: exact counts, determinism, integrity and a truthful ground truth."""

from __future__ import annotations

import csv
import datetime as dt
import html.parser
import json
import re
import sqlite3
from pathlib import Path

import pytest

from agenix_assets.core.sample_data import SCALES, build_catalog, generate_sample_company

AS_OF = dt.date(2026, 3, 1)
TICKET_KEYS = ["ticket_id", "account_id", "contact_id", "created_at", "updated_at", "channel", "category", "priority",
               "status", "product_sku", "subject", "body", "resolution"]
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
PII_TYPES = {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "STREET_ADDRESS"}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("landing")
    generate_sample_company(path, "small", seed=7, as_of=AS_OF)
    return path


@pytest.fixture(scope="module")
def summary(landing: Path) -> dict:
    return json.loads((landing / "_manifest" / "sample.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def crm(landing: Path) -> dict[str, list[sqlite3.Row]]:
    conn = sqlite3.connect(landing / "crm" / "crm.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("accounts", "contacts")}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def tickets(landing: Path) -> list[dict]:
    rows = []
    for path in sorted((landing / "tickets").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


@pytest.fixture(scope="module")
def orders(landing: Path) -> list[dict]:
    with (landing / "erp" / "orders.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pii(landing: Path) -> list[dict]:
    return read_jsonl(landing / "_manifest" / "pii.jsonl")


@pytest.fixture(scope="module")
def facts(landing: Path) -> list[dict]:
    return read_jsonl(landing / "_manifest" / "facts.jsonl")


@pytest.fixture(scope="module")
def doc_texts(landing: Path) -> dict[str, str]:
    """Plain text of every document, as an ingestion step would see it."""
    texts = {}
    for path in sorted((landing / "documents").rglob("*")):
        if path.is_file():
            texts[path.relative_to(landing / "documents").as_posix()] = document_text(path)
    return texts


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class _TextExtractor(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def document_text(path: Path) -> str:
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() for page in PdfReader(path).pages)
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        parser = _TextExtractor()
        parser.feed(raw)
        return "".join(parser.parts)
    return raw


def squash(text: str) -> str:
    return " ".join(text.split())


def iban_mod97_ok(iban: str) -> bool:
    compact = iban.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- counts and layout


def test_small_scale_has_exact_counts(landing, summary, crm, tickets, orders, doc_texts):
    spec = SCALES["small"]
    assert len(crm["accounts"]) == spec.accounts == 20
    assert len(crm["contacts"]) == spec.contacts == 60
    assert len(tickets) == spec.tickets == 200
    assert len(orders) == spec.orders == 300
    assert len(doc_texts) == spec.documents == 40
    by_ext = {ext: sum(1 for p in doc_texts if p.endswith(f".{ext}")) for ext in ("md", "html", "pdf")}
    assert by_ext["pdf"] >= 3
    assert 11 <= by_ext["html"] <= 15  # about a third
    assert by_ext["md"] == 40 - by_ext["pdf"] - by_ext["html"]
    assert summary["counts"]["documents_by_format"] == by_ext
    assert summary["counts"]["tickets"] == 200 and summary["counts"]["orders"] == 300
    assert summary["as_of"] == "2026-03-01" and summary["scale"] == "small" and summary["seed"] == 7
    assert {p.split("/")[0] for p in doc_texts} == {"manuals", "policies", "troubleshooting", "guides"}


def test_summary_is_returned_and_written(tmp_path):
    returned = generate_sample_company(tmp_path, "small", seed=3, as_of=AS_OF)
    written = json.loads((tmp_path / "_manifest" / "sample.json").read_text(encoding="utf-8"))
    assert returned.pop("landing") == str(tmp_path.resolve())
    assert returned == written
    for rel in written["paths"].values():
        assert (tmp_path / rel).exists()


def test_unknown_scale_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown scale"):
        generate_sample_company(tmp_path, "huge")


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_other_seed_differs(landing, tmp_path):
    again = tmp_path / "again"
    generate_sample_company(again, "small", seed=7, as_of=AS_OF)
    first, second = tree_bytes(landing), tree_bytes(again)
    assert first.keys() == second.keys()
    different = [name for name in first if first[name] != second[name]]
    assert different == []

    other = tmp_path / "other"
    generate_sample_company(other, "small", seed=8, as_of=AS_OF)
    third = tree_bytes(other)
    for name in ("crm/crm.sqlite", "erp/orders.csv", "_manifest/pii.jsonl", "_manifest/facts.jsonl"):
        assert third[name] != first[name], name


def test_rerun_overwrites_generated_content(tmp_path):
    generate_sample_company(tmp_path, "small", seed=7, as_of=AS_OF)
    before = tree_bytes(tmp_path)
    (tmp_path / "documents" / "manuals" / "stale.md").write_text("# old\n", encoding="utf-8")
    (tmp_path / "tickets" / "tickets_1999_01.jsonl").write_text("{}\n", encoding="utf-8")
    (tmp_path / "keep.txt").write_text("not generated", encoding="utf-8")
    generate_sample_company(tmp_path, "small", seed=7, as_of=AS_OF)
    after = tree_bytes(tmp_path)
    assert after.pop("keep.txt") == b"not generated"
    assert after == before


def test_catalog_is_deterministic_and_prefix_stable():
    big = build_catalog(7, 200)
    assert [p.sku for p in build_catalog(7, 50)] == [p.sku for p in big[:50]]
    assert [p.specs for p in build_catalog(7, 200)] == [p.specs for p in big]
    assert len({p.sku for p in big}) == 200
    assert [p.sku for p in build_catalog(8, 50)] != [p.sku for p in big[:50]]
    assert any("," in p.name for p in big)  # some names need CSV quoting


# ---------------------------------------------------------------- CRM, tickets, orders


def test_crm_rows_are_consistent(crm):
    accounts = {a["account_id"]: a for a in crm["accounts"]}
    assert all(re.fullmatch(r"ACC-\d{5}", a) for a in accounts)
    for a in crm["accounts"]:
        assert a["segment"] in {"enterprise", "mid_market", "smb"}
        assert a["country"] in {"DE", "AT", "NL", "DK", "SE", "GB", "PL", "CH"}
        assert TS.match(a["created_at"]) and a["created_at"] <= a["updated_at"] < AS_OF.isoformat()
    emails = [c["email"] for c in crm["contacts"]]
    assert len(set(emails)) == len(emails)
    with_contacts = set()
    for c in crm["contacts"]:
        assert re.fullmatch(r"CON-\d{6}", c["contact_id"])
        assert c["account_id"] in accounts
        with_contacts.add(c["account_id"])
        assert re.fullmatch(r"[a-z0-9]+\.[a-z0-9]+\d*@[a-z0-9-]+\.example", c["email"]), c["email"]
        assert re.fullmatch(r"\+\d{2} [\d ]+", c["phone"]), c["phone"]
        assert TS.match(c["created_at"]) and c["created_at"] <= c["updated_at"] < AS_OF.isoformat()
    assert with_contacts == set(accounts)


def test_tickets_schema_and_referential_integrity(landing, crm, tickets):
    contacts = {c["contact_id"]: c for c in crm["contacts"]}
    accounts = {a["account_id"] for a in crm["accounts"]}
    skus = {p.sku for p in build_catalog(7, 1000)}
    assert [t["ticket_id"] for t in tickets] == [f"TCK-{i:06d}" for i in range(1, 201)]
    for t in tickets:
        assert list(t) == TICKET_KEYS
        assert t["account_id"] in accounts
        assert contacts[t["contact_id"]]["account_id"] == t["account_id"]
        assert TS.match(t["created_at"]) and t["created_at"] <= t["updated_at"] < AS_OF.isoformat()
        assert t["channel"] in {"email", "phone", "portal"}
        assert t["category"] in {"installation", "warranty", "returns", "billing", "maintenance", "shipping",
                                 "product_question"}
        assert t["priority"] in {"low", "normal", "high", "urgent"}
        assert t["status"] in {"open", "pending", "resolved", "closed"}
        assert (t["resolution"] is None) == (t["status"] in {"open", "pending"})
        assert t["product_sku"] in skus and t["product_sku"] in t["body"]
        contact = contacts[t["contact_id"]]
        assert f"{contact['first_name']} {contact['last_name']}" in t["body"]
        assert contact["phone"] in t["body"]
    for path in (landing / "tickets").glob("*.jsonl"):
        raw = path.read_bytes()
        assert raw.endswith(b"\n") and b"\r" not in raw
        rows = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
        month = path.stem.removeprefix("tickets_").replace("_", "-")
        assert all(r["created_at"].startswith(month) for r in rows)
        assert [r["ticket_id"] for r in rows] == sorted(r["ticket_id"] for r in rows)


def test_orders_schema_and_referential_integrity(landing, crm, orders):
    header = (landing / "erp" / "orders.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "order_id,account_id,order_date,sku,product_name,quantity,unit_price,currency,status,updated_at"
    accounts = {a["account_id"] for a in crm["accounts"]}
    catalog = {p.sku: p.name for p in build_catalog(7, 1000)}
    assert [o["order_id"] for o in orders] == [f"ORD-{i:07d}" for i in range(1, 301)]
    for o in orders:
        assert o["account_id"] in accounts
        assert catalog[o["sku"]] == o["product_name"]
        assert int(o["quantity"]) > 0
        assert re.fullmatch(r"\d+\.\d{2}", o["unit_price"]) and float(o["unit_price"]) > 0
        assert o["currency"] == "EUR"
        assert o["status"] in {"open", "shipped", "delivered", "cancelled", "returned"}
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", o["order_date"]) and o["order_date"] < AS_OF.isoformat()
        assert TS.match(o["updated_at"]) and o["order_date"] <= o["updated_at"] < AS_OF.isoformat()
    assert any("," in o["product_name"] for o in orders)


def test_orders_cited_in_tickets_exist_and_predate_the_ticket(tickets, orders):
    by_id = {o["order_id"]: o for o in orders}
    cited = 0
    for t in tickets:
        for order_id in re.findall(r"ORD-\d{7}", t["body"]):
            cited += 1
            assert by_id[order_id]["account_id"] == t["account_id"]
            assert by_id[order_id]["order_date"] <= t["created_at"][:10]
    assert cited


# ---------------------------------------------------------------- PII ground truth


def test_ticket_pii_spans_match_bodies(tickets, pii, crm):
    bodies = {t["ticket_id"]: t["body"] for t in tickets}
    names = {f"{c['first_name']} {c['last_name']}" for c in crm["contacts"]}
    emails = {c["email"] for c in crm["contacts"]}
    spans = [p for p in pii if p["source"] == "support_tickets"]
    assert {p["record_id"] for p in spans} == set(bodies)  # every ticket carries PII
    for p in spans:
        assert p["field"] == "body" and p["type"] in PII_TYPES
        assert bodies[p["record_id"]][p["start"]:p["end"]] == p["text"]
        if p["type"] == "PERSON":
            assert p["known_contact"] == (p["text"] in names)
        elif p["type"] == "EMAIL_ADDRESS":
            assert p["known_contact"] == (p["text"] in emails)
            assert p["text"].endswith(".example")
        else:
            assert p["known_contact"] is False
    types = {p["type"] for p in spans}
    assert types == PII_TYPES


def test_ticket_ibans_pass_mod97(pii):
    ibans = [p["text"] for p in pii if p["type"] == "IBAN_CODE"]
    assert ibans
    for iban in ibans:
        assert re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9 ]+", iban)
        assert iban_mod97_ok(iban), iban
    corrupted = ibans[0].replace(" ", "")
    corrupted = corrupted[:-1] + str((int(corrupted[-1]) + 1) % 10)
    assert not iban_mod97_ok(corrupted)


def test_unknown_persons_are_planted(pii, tickets, crm):
    names = {f"{c['first_name']} {c['last_name']}" for c in crm["contacts"]}
    unknown = [p for p in pii if p["source"] == "support_tickets" and p["type"] == "PERSON" and not p["known_contact"]]
    assert len({p["record_id"] for p in unknown}) == round(len(tickets) * 0.05)
    assert all(p["text"] not in names for p in unknown)
    unknown_emails = [p for p in pii if p["type"] == "EMAIL_ADDRESS" and not p["known_contact"]
                      and p["source"] == "support_tickets"]
    assert unknown_emails


def test_document_pii_is_recorded(pii, doc_texts):
    spans = [p for p in pii if p["source"] == "kb_documents"]
    assert spans
    assert any(p["record_id"].endswith(".md") for p in spans)
    for p in spans:
        text = doc_texts[p["record_id"]]
        assert p["type"] in {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"} and p["known_contact"] is False
        if p["record_id"].endswith(".md"):
            assert text[p["start"]:p["end"]] == p["text"]
        else:
            assert p["start"] is None and p["end"] is None
            assert squash(p["text"]) in squash(text)
    assert all(e["text"].endswith("@halvorsen-industrial.example") for e in spans if e["type"] == "EMAIL_ADDRESS")


# ---------------------------------------------------------------- documents and facts


def test_every_fact_sentence_is_in_its_document(facts, doc_texts):
    assert [f["fact_id"] for f in facts] == [f"F-{i:06d}" for i in range(1, len(facts) + 1)]
    assert len({f["key"] for f in facts}) == len(facts)  # one statement per fact key: no contradictions
    assert {f["document_id"] for f in facts} == set(doc_texts)  # every document states a fact
    squashed = {path: squash(text) for path, text in doc_texts.items()}
    for f in facts:
        assert f["question"].endswith("?") and f["answer"]
        assert f["answer"] in f["sentence"]
        if f["document_id"].endswith(".md"):
            assert f["sentence"] in doc_texts[f["document_id"]]
        else:
            assert squash(f["sentence"]) in squashed[f["document_id"]], (f["document_id"], f["sentence"])


def test_pdfs_have_extractable_text(landing, doc_texts):
    pdfs = [p for p in doc_texts if p.endswith(".pdf")]
    assert len(pdfs) >= 3
    for path in pdfs:
        assert (landing / "documents" / path).read_bytes().startswith(b"%PDF")
        assert len(doc_texts[path].split()) > 100


def test_html_documents_are_full_pages_some_with_scripts(landing, doc_texts):
    pages = {p: (landing / "documents" / p).read_text(encoding="utf-8") for p in doc_texts if p.endswith(".html")}
    with_script = [p for p, raw in pages.items() if "<script>" in raw]
    assert with_script and len(with_script) < len(pages)
    for path, raw in pages.items():
        for tag in ("<title>", "<h1>", "<h2>", "<p>", "<ul>"):
            assert tag in raw, (path, tag)
        assert "kbAnalytics" not in doc_texts[path] and "font-family" not in doc_texts[path]


def test_markdown_documents_have_structure(doc_texts):
    for path, text in doc_texts.items():
        if path.endswith(".md"):
            assert text.startswith("# ") and "\n## " in text and "\n- " in text
            assert 150 <= len(text.split()) <= 1_700, path


def test_only_example_domains_are_used(landing, crm, doc_texts, tickets):
    everything = "\n".join(doc_texts.values()) + "\n".join(t["body"] for t in tickets)
    everything += "\n".join(c["email"] for c in crm["contacts"])
    for domain in re.findall(r"@([A-Za-z0-9.-]+)", everything):
        assert domain.rstrip(".").endswith(".example"), domain
