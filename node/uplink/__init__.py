"""The node's side of the coordinator: what it learns before joining, and what it reports.

Map of this package:

    bootstrap.py   from the coordinator: the run-key-signed manifest (pinned), bootstrap peers; ``JoinError``
    manifests.py   where the run manifest comes from: coordinator, file, or flags
    reporter.py    signed reports -> on-disk outbox -> coordinator, with back-off
    planfollow.py  the coordinator's cost plan: fetch, verify against the pinned run key, set "standby"
"""
