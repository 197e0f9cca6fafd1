"""The swarm's networking: the DHT, the averager's start, state announcements and downloads.

Map of this package:

    swarm.py      hivemind DHT, progress tracker, averager (built here, handed to the trainer), manifest announcements
    announce.py   signed state-hash announcements in the DHT; the majority hash a joiner accepts
    statesync.py  the global state and peers: serve it, announce its hash, download and check theirs
    dialback.py   ``python -m node.net.dialback``: the coordinator's dial-back probe (py-libp2p, own process;
                  nothing imports it: it cannot share an interpreter with hivemind)
"""
