"""Activation cache: what is written is what is read, in a resumable, seeded order."""

import pytest
import torch

from steer.lm.cache import CachedActivations, read_cache_meta, write_cache


def _rows(n=1000, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _write(tmp_path, rows, shard_tokens=300, dtype="fp32", total=None):
    batches = rows.split(128)  # the stream's batches need not match the shards
    return write_cache(batches, tmp_path / "c", total or len(rows), shard_tokens, dtype, {"m": 1})


def test_one_pass_reads_every_row_once(tmp_path):
    rows = _rows()
    info = _write(tmp_path, rows)
    assert info["tokens"] == 1000 and [s["tokens"] for s in info["shards"]] == [300, 300, 300, 100]
    assert read_cache_meta(tmp_path / "c")["m"] == 1
    got = torch.cat(list(CachedActivations(tmp_path / "c", batch_tokens=64, repeat=False)))
    assert got.shape == rows.shape
    # Same multiset of rows (order shuffled): sort rows lexicographically by their first column.
    torch.testing.assert_close(got[got[:, 0].argsort()], rows[rows[:, 0].argsort()])


def test_total_tokens_cuts_the_stream_and_bf16_halves_the_size(tmp_path):
    rows = _rows(d=16)
    info = write_cache(rows.split(100), tmp_path / "b", 450, 200, "bf16")
    assert info["tokens"] == 450 and info["dtype"] == "bf16"
    got = torch.cat(list(CachedActivations(tmp_path / "b", batch_tokens=50, repeat=False)))
    assert got.dtype == torch.float32 and got.shape == (450, 16)
    assert (got - got.bfloat16().float()).abs().max() == 0  # stored in bf16


def test_resume_continues_at_the_same_token_across_passes(tmp_path):
    _write(tmp_path, _rows())
    straight = CachedActivations(tmp_path / "c", batch_tokens=96, seed=3)
    it = iter(straight)
    reference = [next(it) for _ in range(25)]  # 2400 tokens: more than two passes
    first = CachedActivations(tmp_path / "c", batch_tokens=96, seed=3)
    it = iter(first)
    for _ in range(13):
        next(it)
    resumed = CachedActivations(tmp_path / "c", batch_tokens=96, seed=3)
    resumed.load_state_dict(first.state_dict())
    it = iter(resumed)
    for want in reference[13:]:
        torch.testing.assert_close(next(it), want)
    # Passes are reshuffled: pass two does not repeat pass one's order.
    assert not torch.equal(reference[0], reference[11])


def test_bad_caches_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="no activation cache"):
        CachedActivations(tmp_path / "nothing")
    _write(tmp_path, _rows())
    with pytest.raises(ValueError, match="already holds"):
        _write(tmp_path, _rows())
    (tmp_path / "c" / "shard-00001.safetensors").unlink()
    with pytest.raises(ValueError, match="lacks shard-00001"):
        read_cache_meta(tmp_path / "c")
    (tmp_path / "c" / "cache.json").unlink()
    with pytest.raises(ValueError, match="not a complete"):
        read_cache_meta(tmp_path / "c")
    other = CachedActivations.__new__(CachedActivations)
    other.tokens, other.folder = 5, tmp_path
    with pytest.raises(ValueError, match="cache of 7"):
        other.load_state_dict({"tokens_yielded": 0, "cache_tokens": 7})
