"""Activation streaming: shapes, first position dropped, shuffling, resume, memory bound."""

import torch
from conftest import requires_embedded

from steer.lm.activations import ActivationStream
from steer.lm.data import TokenContexts


def contexts(tiny_tokenizer, tiny_corpus, n=24):
    return TokenContexts(tiny_corpus, tiny_tokenizer, ctx_len=16, max_contexts=n, shuffle_buffer=0)


def test_batches_cover_every_token_but_the_first_of_each_context(
    tiny_lm, tiny_tokenizer, tiny_corpus
):
    ctx = contexts(tiny_tokenizer, tiny_corpus)
    stream = ActivationStream(tiny_lm, 1, ctx, batch_tokens=50, chunk_contexts=8, autocast=False)
    batches = list(stream)
    assert all(b.shape == (50, 32) for b in batches[:-1])
    acts = torch.cat(batches)
    assert acts.shape[0] == 24 * 15 == stream.tokens_yielded
    ids = torch.stack(list(ctx))
    expected = tiny_lm.residual(ids, 1)[:, 1:].reshape(-1, 32)
    # Same set of rows (shuffled): compare sorted by first coordinate.
    torch.testing.assert_close(acts[acts[:, 0].argsort()], expected[expected[:, 0].argsort()])
    assert not torch.equal(acts, expected)  # shuffled across contexts


def test_resume_continues_at_the_same_position(tiny_lm, tiny_tokenizer, tiny_corpus):
    def make():
        return ActivationStream(
            tiny_lm,
            2,
            contexts(tiny_tokenizer, tiny_corpus),
            batch_tokens=40,
            chunk_contexts=5,
            autocast=False,
        )

    full = list(make())
    first = make()
    it = iter(first)
    head = [next(it) for _ in range(4)]
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed)
    for a, b in zip(head + rest, full, strict=True):
        torch.testing.assert_close(a, b)


def test_ranks_read_disjoint_chunks(tiny_lm, tiny_tokenizer, tiny_corpus):
    def make(rank):
        return ActivationStream(
            tiny_lm,
            0,
            contexts(tiny_tokenizer, tiny_corpus),
            batch_tokens=1000,
            chunk_contexts=4,
            autocast=False,
            rank=rank,
            world_size=2,
        )

    ids = torch.stack(list(contexts(tiny_tokenizer, tiny_corpus)))  # (24, 16)
    for rank in (0, 1):
        got = torch.cat(list(make(rank)))
        mine = torch.cat(
            [ids[c * 4 : c * 4 + 4] for c in range(rank, 6, 2)]
        )  # chunks of 4 contexts
        expected = tiny_lm.residual(mine, 0)[:, 1:].reshape(-1, 32)
        assert got.shape == expected.shape == (12 * 15, 32)
        torch.testing.assert_close(got[got[:, 0].argsort()], expected[expected[:, 0].argsort()])


@requires_embedded
def test_embedded_model_streams_at_a_middle_layer(tiny_corpus):
    from steer.lm.models import load_model

    lm = load_model()
    ctx = TokenContexts(tiny_corpus, lm.tokenizer, ctx_len=32, max_contexts=8)
    batch = next(iter(ActivationStream(lm, 15, ctx, batch_tokens=64)))
    assert batch.shape == (64, 576) and torch.isfinite(batch).all()
