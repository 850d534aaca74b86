"""The model side: loading language models, corpora, activation streaming, data-parallel sharding."""
