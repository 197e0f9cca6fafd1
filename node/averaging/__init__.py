"""The all-reduce that makes one exact average of every member's pseudo-gradient.

The only room (with ``net/swarm.py``) that touches hivemind's averaging internals. A round's data
flow: the trainer's buffers -> ``averager.py`` matchmaking -> ``runner.py`` sends each reducer its
part (encoded by ``codecs.py`` through ``wire.py``) -> each reducer's ``reduction.py`` aggregates the
senders' copies (``robust.py``) and returns the averaged part -> ``node/policies/agreement.py`` settles which
reducers failed -> every member holds the same bytes.

Map of this package:

    averager.py   ``PseudoGradientAverager``: hivemind's averager with our runner, the agreement's DHT
                  records, state served to joiners and updates to validators
    runner.py     ``ExactAverageRunner``: reducers return averaged parts (not deltas), so members agree bit for bit
    reduction.py  ``RobustPartReducer``: a reducer aggregates every sender's copy of a part at once
    robust.py     robust aggregation of one part (norm clip, CenteredClip, trimmed mean) and outlier stats; pure torch
    parts.py      an all-reduce's parts: shares as views, missing parts, zeroing a failed reducer, part checks
    records.py    signed agreement records: a DHT validator that accepts only a member's own Ed25519-signed subkey
                  (the rule that settles them is ``node/policies/agreement.py``, pure, shared with ``sim``)
    codecs.py     pseudo-gradient codecs (fp16 ... 2-bit, top-k, chunked top-k) and error feedback; pure torch
    sparse.py     the sparse codecs' wire layouts: flat top-k, and chunked top-k with 2-bit values
    packing.py    what every codec's bytes share: the part size, ``CodecError``, bit packing, finite checks
    wire.py       ``WireCodec``: our codecs in hivemind's compression slot (tagged parts, both directions)
    counters.py   byte counters of every part sent and received (shared memory: the runner is in a child process)
    served.py     a round's update in shared memory for validators; bounded streamed downloads of state or updates
    timeouts.py   the averager's chunk and all-reduce timeouts, following the measured link and the expected group
    group.py      checks on what group members gathered (tokens, state hash, round): drop the malformed
"""
