"""Corpora: file formats, packing, determinism, held-out split, errors."""

import gzip
import hashlib
import json
import lzma

import pytest

from steer.lm.data import CorpusError, TokenContexts, contexts_from, iter_texts

DOCS = [
    f"Document {hashlib.md5(str(i).encode()).hexdigest()} talks about bridges." for i in range(30)
]


def write_jsonl(path, opener=open):
    with opener(path, "wt") as f:
        for i, text in enumerate(DOCS):
            f.write(json.dumps({"id": i, "body": text}) + "\n")


@pytest.mark.parametrize(
    "name,opener", [("c.jsonl", open), ("c.jsonl.xz", lzma.open), ("c.jsonl.gz", gzip.open)]
)
def test_jsonl_variants_read_the_configured_field(tmp_path, name, opener):
    write_jsonl(tmp_path / name, opener)
    assert list(iter_texts(tmp_path / name, text_field="body")) == DOCS


def test_txt_paragraphs_parquet_and_directories(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("first para\nline two\n\nsecond para\n")
    pq.write_table(pa.table({"text": ["from parquet"]}), tmp_path / "d" / "b.parquet")
    (tmp_path / "d" / "ignored.bin").write_bytes(b"\0")
    assert list(iter_texts(tmp_path / "d")) == [
        "first para\nline two",
        "second para",
        "from parquet",
    ]
    assert list(iter_texts(tmp_path / "d" / "[ab].*")) == [
        "first para\nline two",
        "second para",
        "from parquet",
    ]
    assert list(iter_texts(tmp_path / "d" / "a*")) == ["first para\nline two", "second para"]


def test_errors_are_clear(tmp_path, tiny_tokenizer):
    with pytest.raises(CorpusError, match="does not exist"):
        list(iter_texts(tmp_path / "missing.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no corpus files match"):
        list(iter_texts(tmp_path / "nothing-*.jsonl"))
    with pytest.raises(CorpusError, match="no text files"):
        list(iter_texts(tmp_path / "empty"))
    write_jsonl(tmp_path / "c.jsonl")
    with pytest.raises(CorpusError, match="no string field 'text'"):
        list(iter_texts(tmp_path / "c.jsonl"))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(CorpusError, match="not valid JSON"):
        list(iter_texts(tmp_path / "bad.jsonl"))
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(CorpusError, match="holds no text"):
        list(TokenContexts(tmp_path / "e.txt", tiny_tokenizer, ctx_len=8))


def test_packing_is_deterministic_and_splits_are_disjoint(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "c.jsonl")

    def make(**kw):
        return [
            c.tolist()
            for c in TokenContexts(
                tmp_path / "c.jsonl", tiny_tokenizer, ctx_len=16, text_field="body", **kw
            )
        ]

    first, again = make(seed=1, shuffle_buffer=8), make(seed=1, shuffle_buffer=8)
    assert first == again and all(len(c) == 16 for c in first)
    assert make(seed=2, shuffle_buffer=8) != first
    assert sorted(make(seed=2, shuffle_buffer=8)) == sorted(first)  # same contexts, other order

    def docs(split):
        return list(
            TokenContexts(
                tmp_path / "c.jsonl",
                tiny_tokenizer,
                text_field="body",
                split=split,
                heldout_fraction=0.3,
            ).documents()
        )

    train, held = docs("train"), docs("heldout")
    assert train and held and sorted(train + held) == sorted(DOCS)


def test_contexts_from_texts_tensors_and_ids_match_the_corpus_packing(tiny_tokenizer, tiny_corpus):
    import torch

    from_path = list(TokenContexts(tiny_corpus, tiny_tokenizer, ctx_len=16, shuffle_buffer=0))
    texts = list(iter_texts(tiny_corpus))
    packed = list(contexts_from(texts, tiny_tokenizer, 16))  # texts, in order
    assert [c.tolist() for c in packed] == [c.tolist() for c in from_path]
    as_ids = list(contexts_from([c.tolist() for c in packed[:3]], tiny_tokenizer, 16))
    assert all(a.dtype == torch.long and a.equal(b) for a, b in zip(as_ids, packed, strict=False))
    assert len(list(contexts_from(torch.stack(packed[:2]), tiny_tokenizer, 16))) == 2
    assert list(contexts_from([], tiny_tokenizer, 16)) == []
