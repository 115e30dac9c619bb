"""PII detection and masking with real Presidio (blank spaCy pipeline, offline), no mocks."""

from __future__ import annotations

import datetime
import socket
import time
from pathlib import Path

import pytest

from agenix_assets.core import pii
from agenix_assets.core.pii import ENTITY_TYPES, TARGETS, PiiRedactor, evaluate, load_evaluation_sample
from agenix_assets.core.sample_data import generate_sample_company

PEOPLE = [
    {"first_name": "Anna", "last_name": "Keller", "email": "anna.keller@keller-anlagenbau.example"},
    {"first_name": "Lars", "last_name": "Lindqvist", "email": "lars.lindqvist@nordbruk.example"},
    {"first_name": "Eva", "last_name": "van Leeuwen", "email": "eva.vanleeuwen@procestechniek.example"},
]


@pytest.fixture(scope="module")
def spacy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spacy") / "blank-en"


@pytest.fixture(scope="module")
def redactor(spacy_dir: Path) -> PiiRedactor:
    return PiiRedactor(PEOPLE, spacy_model_dir=spacy_dir)


def _types(spans: list[pii.PiiSpan]) -> list[tuple[str, str]]:
    return [(s.type, s.text) for s in spans]


def test_known_contacts_get_consistent_placeholders(redactor: PiiRedactor) -> None:
    text = (
        "Anna Keller (anna.keller@keller-anlagenbau.example) asked us to call back. "
        "Her colleague Lars Lindqvist will join the visit. Anna Keller confirmed the date, "
        "and Ms. Keller will send the drawings to anna.keller@keller-anlagenbau.example."
    )
    red = redactor.redact(text)
    assert red.text == (
        "<PERSON_1> (<EMAIL_ADDRESS_1>) asked us to call back. "
        "Her colleague <PERSON_2> will join the visit. <PERSON_1> confirmed the date, "
        "and Ms. <PERSON_1> will send the drawings to <EMAIL_ADDRESS_1>."
    )
    assert red.counts == {"PERSON": 4, "EMAIL_ADDRESS": 2}
    assert {s.recognizer for s in red.spans if s.type == "PERSON"} == {"KnownPeopleRecognizer"}
    assert [(s.start, s.end) for s in red.spans] == sorted((s.start, s.end) for s in red.spans)
    assert all(text[s.start:s.end] == s.text for s in red.spans)


def test_known_name_variants(redactor: PiiRedactor) -> None:
    red = redactor.redact("Keller, Anna wrote; anna keller agreed. Mevrouw van Leeuwen and Eva van Leeuwen too.")
    assert red.text == "<PERSON_1> wrote; <PERSON_1> agreed. Mevrouw <PERSON_2> and <PERSON_2> too."


def test_iban_checksum(redactor: PiiRedactor) -> None:
    valid = ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "NL91 ABNA 0417 1643 00",
             "GB29 NWBK 6016 1331 9268 19"]
    for iban in valid:
        assert _types(redactor.analyze(f"Please transfer the refund to {iban}.")) == [("IBAN_CODE", iban)]
    wrong = "DE89 3704 0044 0532 0130 01"  # one digit off: mod-97 check fails
    assert redactor.analyze(f"Please transfer the refund to {wrong}.") == []


@pytest.mark.parametrize("phone", [
    "+49 30 1234567", "+31 20 555 0192", "+44 20 7946 0958", "+41 44 555 01 23", "+45 55 50 12 77",
    "+46 8 555 012 34", "+43 1 5550 417", "+48 22 123 45 67", "0049 89 1234567", "030 1234567",
    "(030) 12345678", "020 7946 0958", "+49 (0)40 5550 1234",
])
def test_phone_formats(redactor: PiiRedactor, phone: str) -> None:
    assert _types(redactor.analyze(f"Please call me on {phone} tomorrow.")) == [("PHONE_NUMBER", phone)]


def test_numbers_that_are_not_phone_numbers(redactor: PiiRedactor) -> None:
    text = ("Invoice INV-2024-12345 for ORD-0001234 (serial SN 24-123456) dated 05.01.2024, 2024-05-01; "
            "0.37 kW motor, DN 150, 3000 rpm, postcode 04109.")
    assert redactor.analyze(text) == []


@pytest.mark.parametrize("address", [
    "Lindenstraße 14, 10115 Berlin", "Robert-Bosch-Straße 7a, 70173 Stuttgart", "Mariahilfer Straße 120, 1060 Wien",
    "Keizersgracht 12, 1015 AB Amsterdam", "Storgatan 5, 111 22 Stockholm", "ul. Przemysłowa 5, 00-950 Warszawa",
    "Vesterbrogade 3, 1050 København", "Am Hafen 9, 20095 Hamburg", "Bahnhofstrasse 21, 8001 Zürich",
    "14 Queen Street, London EC1A 1BB", "3 Station Road, Sheffield S1 8JN", "Industrieweg 8",
])
def test_street_address(redactor: PiiRedactor, address: str) -> None:
    assert _types(redactor.analyze(f"Please send the parts to our site at {address}.")) == [("STREET_ADDRESS", address)]


def test_product_names_are_not_addresses_or_people(redactor: PiiRedactor) -> None:
    text = ("The DG-6205 Deep Groove Ball Bearing 6205 runs hot During 3 hours of Monitoring 24 hours. "
            "Max Pressure: 16 bar. Werner Maschinenbau GmbH and Stadtwerke Dortmund ordered it. "
            "Kind regards,\nHalvorsen Support Team")
    assert redactor.analyze(text) == []


def test_credit_card_luhn(redactor: PiiRedactor) -> None:
    assert _types(redactor.analyze("Card 4111 1111 1111 1111 please.")) == [("CREDIT_CARD", "4111 1111 1111 1111")]
    assert redactor.analyze("Card 4111 1111 1111 1112 please.") == []


def test_unknown_person_email_and_name(redactor: PiiRedactor) -> None:
    text = "Please also copy Tjark Oldenburg (tjark.oldenburg@contractor-services.example) on your reply."
    spans = redactor.analyze(text)
    assert _types(spans) == [("PERSON", "Tjark Oldenburg"),
                             ("EMAIL_ADDRESS", "tjark.oldenburg@contractor-services.example")]
    assert "KnownPeopleRecognizer" not in {s.recognizer for s in spans}
    # a public-suffix domain works as well, and so does a plain first-name + surname mention
    assert _types(redactor.analyze("Write to j.smith@firma.co.uk or ask Sabine Hartung.")) == [
        ("EMAIL_ADDRESS", "j.smith@firma.co.uk"), ("PERSON", "Sabine Hartung")]


def test_url_and_ip_are_reported_and_allow_list(redactor: PiiRedactor, spacy_dir: Path) -> None:
    text = "See https://kb.halvorsen-industrial.example/manuals/hx-200 or host 192.168.10.20."
    assert _types(redactor.analyze(text)) == [
        ("URL", "https://kb.halvorsen-industrial.example/manuals/hx-200"), ("IP_ADDRESS", "192.168.10.20")]
    narrow = PiiRedactor(spacy_model_dir=spacy_dir, entities=["EMAIL_ADDRESS"],
                         allow_list=["support@halvorsen-industrial.example"])
    mails = text + " Mail support@halvorsen-industrial.example or a.b@c.example."
    start = mails.index("a.b@")
    assert narrow.analyze(mails) == [
        pii.PiiSpan("EMAIL_ADDRESS", start, start + 13, "a.b@c.example", 1.0, "OfflineEmailRecognizer")]


def test_placeholders_are_never_pii(redactor: PiiRedactor) -> None:
    text = ("Hi, Anna Keller here. Call +49 30 1234567 or mail anna.keller@keller-anlagenbau.example; "
            "IBAN DE89 3704 0044 0532 0130 00; site Lindenstraße 14, 10115 Berlin; card 4111 1111 1111 1111; "
            "https://example.com/x from 10.0.0.1.\n\nKind regards,\nMaximilian Brückner")
    red = redactor.redact(text)
    assert {s.type for s in red.spans} == set(ENTITY_TYPES)
    assert redactor.contains_pii(red.text) == []
    assert redactor.contains_pii(text)
    # new PII next to old placeholders gets fresh numbers
    again = redactor.redact(red.text + " Lars Lindqvist joined.")
    assert again.text.endswith("<PERSON_3> joined.")


def test_redact_many_numbers_per_text(redactor: PiiRedactor) -> None:
    first, second = redactor.redact_many(["Lars Lindqvist and Anna Keller", "Anna Keller"])
    assert first.text == "<PERSON_1> and <PERSON_2>"
    assert second.text == "<PERSON_1>"
    assert redactor.redact("No personal data here.").text == "No personal data here."


def test_evaluation_on_small_sample(tmp_path: Path, spacy_dir: Path, redactor: PiiRedactor) -> None:
    generate_sample_company(tmp_path / "landing", "small", seed=7, as_of=datetime.date(2026, 11, 1))
    sample = load_evaluation_sample(tmp_path / "landing")
    assert len(sample["texts"]) == 240  # 200 tickets + 40 documents (md, html, pdf)
    evaluator = PiiRedactor(sample["known_people"], organizations=sample["organizations"],
                            spacy_model_dir=spacy_dir)
    report = evaluate(evaluator, sample["texts"], sample["manifest"])
    assert report["unlocated"] == 0
    assert report["recall_structured"] >= TARGETS["recall_structured"]
    assert report["recall_known_contact_names"] >= TARGETS["recall_known_contact_names"]
    assert report["precision"] >= TARGETS["precision"]
    assert report["meets_targets"] is True
    for typ in ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "STREET_ADDRESS"):
        assert report["per_type"][typ]["planted"] > 0


def test_no_network_access(monkeypatch: pytest.MonkeyPatch, spacy_dir: Path, redactor: PiiRedactor) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    pii._tld_extractor.cache_clear()  # the public-suffix data is loaded again under the guard
    start = time.perf_counter()
    fresh = PiiRedactor(PEOPLE, spacy_model_dir=spacy_dir)
    spans = fresh.analyze("Mail nils.berg@mailbox.example or lena@firma.de, see www.example.com/x.")
    elapsed = time.perf_counter() - start
    assert attempts == []
    assert elapsed < 5, elapsed
    assert [s.type for s in spans] == ["EMAIL_ADDRESS", "EMAIL_ADDRESS", "URL"]


def test_long_text_is_analysed_in_chunks(monkeypatch: pytest.MonkeyPatch, redactor: PiiRedactor) -> None:
    monkeypatch.setattr(pii, "CHUNK_CHARS", 300)
    filler = "The pump runs quietly after the seal was replaced.\n\n" * 20
    text = filler + "Call Anna Keller on +49 30 1234567.\n\n" + filler + "Or mail lars.lindqvist@nordbruk.example."
    spans = redactor.analyze(text)
    assert _types(spans) == [("PERSON", "Anna Keller"), ("PHONE_NUMBER", "+49 30 1234567"),
                             ("EMAIL_ADDRESS", "lars.lindqvist@nordbruk.example")]
    assert all(text[s.start:s.end] == s.text for s in spans)


def test_missing_spacy_model_is_never_downloaded(spacy_dir: Path) -> None:
    import spacy

    name = "en_core_web_sm"
    if spacy.util.is_package(name):
        pytest.skip(f"{name} is installed")
    with pytest.raises(ValueError, match="not installed"):
        PiiRedactor(spacy_model=name, spacy_model_dir=spacy_dir)
