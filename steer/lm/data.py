"""Text corpora: read documents, tokenize, pack into fixed-length contexts.

Sources (`iter_texts`):
- a file: `.txt` (blank-line separated paragraphs are documents), `.jsonl` / `.json`
  (one object per line, text in `text_field`), `.parquet` (column `text_field`), any of
  these compressed as `.xz` or `.gz`;
- a directory: every such file inside it, recursively, in sorted order;
- a glob pattern (`corpus/wiki-0[0-6].jsonl.xz`): the matching files, in sorted order;
- `hf:<dataset>[:<config>][@<split>]`: a Hugging Face dataset, streamed (needs the
  `datasets` package and the Hub).

Packing: documents are tokenized, joined with EOS and cut into contexts of `ctx_len`
tokens; a partial last context is dropped. Each document belongs to the held-out split
or to the train split by a hash of its position, so the two never overlap.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import itertools
import json
import lzma
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
COMPRESSIONS = {".xz": lzma.open, ".gz": gzip.open}
TOKENIZE_BATCH_DOCS = 64


class CorpusError(ValueError):
    """The corpus cannot be read or holds no text."""


def _split_suffix(path: Path) -> tuple[str, str | None]:
    """`a.jsonl.xz` -> (".jsonl", ".xz"); `a.txt` -> (".txt", None)."""
    suffixes = path.suffixes
    if suffixes and suffixes[-1] in COMPRESSIONS:
        return (suffixes[-2] if len(suffixes) > 1 else ""), suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def corpus_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [
        p for p in sorted(path.rglob("*")) if p.is_file() and _split_suffix(p)[0] in TEXT_SUFFIXES
    ]
    if not files:
        raise CorpusError(
            f"no text files ({', '.join(TEXT_SUFFIXES)}, optionally .xz/.gz) in {path}"
        )
    return files


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    kind, compression = _split_suffix(path)
    if kind not in TEXT_SUFFIXES:
        raise CorpusError(
            f"unsupported corpus file {path}: use {', '.join(TEXT_SUFFIXES)} (optionally .xz/.gz)"
        )
    if kind == ".parquet":
        if compression:
            raise CorpusError(f"compressed parquet is not supported: {path}")
        yield from _read_parquet(path, text_field)
        return
    opener = COMPRESSIONS.get(compression, open)
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            if kind == ".txt":
                yield from _paragraphs(f)
                return
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise CorpusError(f"{path}:{line_no} is not valid JSON") from None
                text = record.get(text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise CorpusError(
                        f"{path}:{line_no} has no string field {text_field!r} (set --text-field)"
                    )
                yield text
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as err:
        raise CorpusError(f"cannot read {path}: {err}") from None


def _paragraphs(f) -> Iterator[str]:
    buffer: list[str] = []
    for line in f:
        if line.strip():
            buffer.append(line)
        elif buffer:
            yield "".join(buffer).strip()
            buffer = []
    if buffer:
        yield "".join(buffer).strip()


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError("reading .parquet needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.ParquetFile(path)
        if text_field not in table.schema_arrow.names:
            raise CorpusError(f"{path} has no column {text_field!r} (set --text-field)")
        for batch in table.iter_batches(columns=[text_field]):
            yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))
    except OSError as err:
        raise CorpusError(f"cannot read {path}: {err}") from None


def _read_hf(spec: str, text_field: str) -> Iterator[str]:
    """`hf:name[:config][@split]`, streamed."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise CorpusError(
            "Hugging Face datasets need the `datasets` package: pip install datasets"
        ) from None
    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    try:
        dataset = load_dataset(name, config or None, split=split or "train", streaming=True)
        for record in dataset:
            text = record.get(text_field)
            if isinstance(text, str):
                yield text
    except Exception as err:  # datasets raises many types; the message is what matters
        raise CorpusError(
            f"cannot stream Hugging Face dataset {spec!r}: {str(err).splitlines()[0]}"
        ) from None


def iter_texts(source: str | Path, text_field: str = "text") -> Iterator[str]:
    """Documents of a corpus, in a fixed order. Raises CorpusError when unreadable."""
    spec = str(source)
    if spec.startswith("hf:"):
        yield from _read_hf(spec[3:], text_field)
        return
    path = Path(spec).expanduser()
    if any(ch in spec for ch in "*?[") and not path.exists():
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        if not files:
            raise CorpusError(f"no corpus files match {spec}")
    elif not path.exists():
        raise CorpusError(
            f"corpus {path} does not exist (give a file, a directory, a glob, or hf:<dataset>)"
        )
    else:
        files = corpus_files(path)
    for file in files:
        for inner in corpus_files(file):  # a glob may match directories too
            yield from _read_file(inner, text_field)


def in_heldout(doc_index: int, fraction: float, seed: int = 0) -> bool:
    """Deterministic document -> split assignment (stable across runs and machines)."""
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}:{doc_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def pack_texts(texts: Iterable[str], tokenizer, ctx_len: int) -> Iterator[torch.Tensor]:
    """Tokenize documents (in batches of TOKENIZE_BATCH_DOCS), join them with EOS and cut
    contexts of ctx_len tokens, each (ctx_len,) int64; empty documents are skipped and a
    partial last context is dropped."""
    eos = tokenizer.eos_token_id
    buffer: list[int] = []
    documents = (t for t in texts if t)
    while batch := list(itertools.islice(documents, TOKENIZE_BATCH_DOCS)):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            buffer.extend(ids)
            if eos is not None:
                buffer.append(eos)
        while len(buffer) >= ctx_len:
            yield torch.tensor(buffer[:ctx_len], dtype=torch.long)
            del buffer[:ctx_len]


def contexts_from(
    source, tokenizer, ctx_len: int, seed: int = 0, text_field: str = "text"
) -> Iterator[torch.Tensor]:
    """Token contexts (ctx_len,) from whatever a caller was handed: a corpus path or hf:
    spec (TokenContexts, shuffled by seed), a (B, T) or (T,) tensor of token ids, an
    iterable of texts (packed as pack_texts does) or of token-id sequences. An empty
    iterable gives no contexts."""
    if isinstance(source, (str, Path)):
        return iter(
            TokenContexts(source, tokenizer, ctx_len=ctx_len, text_field=text_field, seed=seed)
        )
    if isinstance(source, torch.Tensor):
        return iter(source if source.dim() == 2 else source[None])
    it = iter(source)
    first = next(it, None)
    if first is None:
        return iter(())
    rest = itertools.chain([first], it)
    if isinstance(first, str):
        return pack_texts(rest, tokenizer, ctx_len)
    return (torch.as_tensor(c, dtype=torch.long) for c in rest)


@dataclass
class TokenContexts:
    """A re-iterable, deterministic stream of packed token contexts, each (ctx_len,) int64.

    Iterating twice yields the same contexts in the same order, so a run can resume by
    skipping the contexts it has already used.
    """

    source: str | Path
    tokenizer: object
    ctx_len: int = 128
    text_field: str = "text"
    split: str = "all"
    """`all`, `train` (documents outside the held-out split) or `heldout`."""
    heldout_fraction: float = 0.0
    """Fraction of documents reserved for `heldout` (by a hash of their position)."""
    shuffle_buffer: int = 1024
    """Contexts are shuffled through a buffer of this many (0: corpus order)."""
    seed: int = 0
    max_contexts: int | None = None

    def __post_init__(self) -> None:
        if self.ctx_len < 2:
            raise CorpusError(f"ctx_len must be at least 2, got {self.ctx_len}")
        if self.split not in ("all", "train", "heldout"):
            raise CorpusError(f"split must be all, train or heldout, got {self.split!r}")
        if self.split == "heldout" and self.heldout_fraction <= 0:
            raise CorpusError("split='heldout' needs heldout_fraction > 0")

    def documents(self) -> Iterator[str]:
        for index, text in enumerate(iter_texts(self.source, self.text_field)):
            held = in_heldout(index, self.heldout_fraction)
            if self.split == "all" or held == (self.split == "heldout"):
                yield text

    def __iter__(self) -> Iterator[torch.Tensor]:
        contexts = pack_texts(self.documents(), self.tokenizer, self.ctx_len)
        if self.shuffle_buffer > 1:
            contexts = buffer_shuffle(contexts, self.shuffle_buffer, self.seed)
        count = 0
        for context in contexts:
            if self.max_contexts is not None and count >= self.max_contexts:
                return
            count += 1
            yield context
        if count == 0:
            raise CorpusError(
                f"corpus {self.source} ({self.split} split) holds no text long enough for one "
                f"context of {self.ctx_len} tokens"
            )


def buffer_shuffle(items: Iterator, size: int, seed: int) -> Iterator:
    """Shuffle a stream through a buffer of `size` items, deterministically from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = int(torch.randint(size, (1,), generator=gen))
        buffer[slot], item = item, buffer[slot]
        yield item
    order = torch.randperm(len(buffer), generator=gen).tolist()
    yield from (buffer[i] for i in order)


class RepeatContexts:
    """Iterate a corpus again and again (each pass reshuffled with seed + epoch), so short
    corpora still fill a token budget; deterministic, so resuming skips to the same place.

    make: epoch -> re-iterable contexts (e.g. a TokenContexts with seed + epoch)."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        epoch = 0
        while True:
            yield from self.make(epoch)
            epoch += 1
