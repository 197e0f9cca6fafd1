"""The model's life: its architecture, vocabulary, global state and checkpoints, exports and cards.

Map of this package:

    gpt.py           the GPT (GPT-2's exact architecture) and its presets
    tokenizer.py     vocabularies: bytes, or a BPE trained locally with ``tokenizers``; tokenizer.json
    state.py         global state, its hash, the checkpoint's schema (``NodeCheckpoint``), atomic writes
    initial.py       a run's initial checkpoint: find or fetch it, verify its sha256, load it
    export.py        the global model <-> the Hugging Face GPT-2 layout (safetensors, config, tokenizer)
    modelcard.py     the export's README.md: run, validation curve, compute and $, contributors
    generate.py      ``swarm generate``: sampling from an export or a state dir
    certificates.py  attribution certificates checked offline (``swarm certificate verify``)
"""
