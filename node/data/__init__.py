"""Training data: real text, tokens, the split every node agrees on, and each node's windows.

Map of this package:

    corpus.py     ``Corpus`` (train/validation tokens), the split by file hash, ``check_data`` against the manifest
    load.py       ``load_corpus``: the stdlib's sources by default, ``--data`` text files, or prepared shards
    sampler.py    per-(run, peer, round) window samplers (what a validator recomputes), bits-per-byte evaluation
    textfiles.py  text files found by content (UTF-8, no NUL; gzip/xz/zstd read), skips counted by reason
    shards.py     ``swarm data prepare``: text files -> memory-mapped token shards (bounded memory)
"""
