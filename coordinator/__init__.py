"""coordinator: the contribution ledger service. Never in the training path: the swarm trains on
while it is down, and it loses nothing when it comes back (nodes re-send from their outboxes).

Map of this package::

    config.py    CoordinatorConfig: one typed tree of settings with units and defaults (pydantic-settings, SWARM_COORDINATOR_*)
    ledger.py    pure acceptance rules: Reject reasons -> HTTP status, freshness, replay, seq window,
                 per-peer token bucket, the confirmation rule, display names and device labels
    plausibility.py  pure bounds on every number in a report (int64, durations, the tokens/s
                 ceiling from the run's model, price cap)
    states.py    pure peer states (online / joining / stale / offline) from timestamps and now
    cost.py      pure cost model (price per node, $/1M tokens, burn, time to target); sim reuses it
    planner.py   pure cost planner: budget, active / standby for paid peers, round size, forecast; sim reuses it
    plans.py     the plan service: ledger rows -> planner -> a Plan signed with the run key; budget changes
    store.py     the only ledger SQL: schema, versioned migrations, inserts and queries (one text, both engines)
    database.py  the two engines: SQLite (a file, the default) and PostgreSQL (a URL several coordinators
                 share); DDL translation, placeholders, the writers' lock, rows by name
    ingest.py    the acceptance pipeline: verify, check, group-commit to the ledger, count rejections;
                 validators' verdicts only from the peer ids the operator listed (``validators``)
    snapshot.py  pure builder of the dashboard snapshot from ledger rows
    outliers.py  pure: reducers' outlier reports -> flagged peers (>= 2 distinct reducers per round)
    hub.py       the cached snapshot, rebuilt in the background and pushed over SSE
    streams.py   live (SSE) streams: slots per address below the cap, idle and lifetime ends
    metrics.py   Prometheus metrics in a per-app registry
    keys.py      aiohttp AppKeys of the services one app owns
    runkey.py    the organizer's run key (signs manifest, plan, budget, certificates); the join line
    peerbook.py  bootstrap addresses from heartbeats, confirmed by a dial-back probe process
    runkey.py    the organizer's run key (signs manifest, plan, budget, certificates)
    certificates.py  attribution certificates: which checkpoint to certify, credits as of its round
    routes.py    thin HTTP handlers (the API table is in its docstring)
    app.py       create_app(config): wiring, lifecycle (cleanup_ctx), security headers
    cli.py       `swarm coordinator` / `python -m coordinator`
    static/      the dashboard: index.html, app.js, style.css, vendor/ (Chart.js, MIT)

Allowed imports: stdlib, ``protocol``, aiohttp, prometheus_client, psycopg (only for a PostgreSQL ledger).
Never torch, hivemind, libp2p, ``node`` or ``sim`` (import-linter). ``cost``, ``states``, ``planner``
and ``ledger`` import only stdlib and ``protocol`` so that ``sim`` can reuse them.
"""
