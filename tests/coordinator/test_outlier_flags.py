"""Reducers' outlier reports: a member is flagged once >= 2 distinct reducers reported it in each of
3 rounds; its credit stays unconfirmed; the snapshot (and so the dashboard) shows the flag.
A single reducer, or a member reporting itself, flags nobody. DHT state announcements sent to the
coordinator are refused and counted."""
from __future__ import annotations

from coordinator_testing import RUN_ID, identity, post, state

from coordinator.outliers import apply_flags, flags
from coordinator.store import MIGRATIONS, Incoming, Store
from protocol import MemberOutlier, OutlierReport, StateAnnouncement, seal


def _outliers(clock, reducer: int, seq: int, round_: int, *members: int) -> OutlierReport:
    return OutlierReport(
        run_id=RUN_ID, peer_id=identity(reducer).peer_id, seq=seq, sent_at=clock.now, round=round_,
        aggregation="centered_clip", members=4,
        outliers=[MemberOutlier(peer_id=identity(m).peer_id, max_ratio=40.0, min_ratio=35.0, clipped=0.95) for m in members],
    )


async def test_two_reducers_in_three_rounds_flag_a_member_and_its_credit_stays_unconfirmed(client, clock, make_report):
    poisoner = identity(9)
    # every peer reports round 1, and each confirms the others' claims (the group saw them)
    group = [1, 2, 3, 9]
    from protocol import GroupClaim

    for i in group:
        claims = [GroupClaim(identity(j).peer_id, 1000) for j in group]
        status, _ = await post(client, seal(make_report(identity(i), 0, round=1, tokens=1000, group=claims), identity(i)))
        assert status == 200
    snap = await state(client)
    row = next(p for p in snap["peers"] if p["peer_id"] == poisoner.peer_id)
    assert row["flagged"] is False and row["confirmed_tokens"] == 1000

    # one reducer alone (it could be lying) and the poisoner naming an honest peer: no flag
    seq = {1: 1, 2: 1, 9: 1}

    async def outliers_from(reducer: int, round_: int, *members: int) -> None:
        status, _ = await post(client, seal(_outliers(clock, reducer, seq[reducer], round_, *members), identity(reducer)))
        seq[reducer] += 1
        assert status == 200

    await outliers_from(1, 1, 9)
    await outliers_from(9, 1, 2, 9)
    assert [p["peer_id"] for p in (await state(client))["peers"] if p["flagged"]] == []

    # a second, distinct reducer in the same round: one round against it, not yet a pattern
    await outliers_from(2, 1, 9)
    await outliers_from(1, 2, 9)
    await outliers_from(2, 2, 9)
    assert [p["peer_id"] for p in (await state(client))["peers"] if p["flagged"]] == []
    # the third such round: flagged, credit unconfirmed, counted in the swarm
    await outliers_from(1, 4, 9)
    await outliers_from(2, 4, 9)
    snap = await state(client)
    flagged = [p for p in snap["peers"] if p["flagged"]]
    assert [p["peer_id"] for p in flagged] == [poisoner.peer_id]
    assert flagged[0]["confirmed_tokens"] == 0 and flagged[0]["unconfirmed_tokens"] == 1000
    flag = flagged[0]["flag"]
    assert (flag["reducers"], flag["first_round"], flag["flagged_at"], flag["rounds"]) == (2, 1, 4, [1, 2, 4])
    assert snap["swarm"]["flagged"] == 1
    assert snap["swarm"]["confirmed_tokens"] == 3000
    assert flag["dissent"] is False


async def test_members_that_name_a_liar_in_the_agreement_flag_it_as_a_dissenter(client, clock, make_report):
    """The agreement's dissent reports (``MemberOutlier.dissent``, node/policies/agreement.py) take
    the outlier path: two members naming a peer in each of three rounds flag it, and the flag says why."""
    liar = identity(9)
    status, _ = await post(client, seal(make_report(liar, 0, round=1, tokens=1000), liar))
    assert status == 200
    for seq, round_ in enumerate((1, 2, 3), start=1):
        for member in (1, 2):
            report = OutlierReport(run_id=RUN_ID, peer_id=identity(member).peer_id, seq=seq, sent_at=clock.now,
                                   round=round_, aggregation="mean", members=4,
                                   outliers=[MemberOutlier(peer_id=liar.peer_id, max_ratio=1.0, min_ratio=1.0,
                                                           clipped=0.0, dissent=True)])
            status, body = await post(client, seal(report, identity(member)))
            assert status == 200, body
    flagged = {p["peer_id"]: p for p in (await state(client))["peers"] if p["flagged"]}
    assert list(flagged) == [liar.peer_id]
    assert flagged[liar.peer_id]["flag"]["dissent"] is True and flagged[liar.peer_id]["flag"]["reducers"] == 2


async def test_state_announcements_are_not_for_the_coordinator(client, clock):
    msg = StateAnnouncement(run_id=RUN_ID, peer_id=identity(1).peer_id, sent_at=clock.now, round=3, state_hash="ab" * 32)
    status, body = await post(client, seal(msg, identity(1)))
    assert status == 400 and body["error"] == "unknown_kind"
    snap = await state(client)
    assert snap["rejections"].get("unknown_kind") == 1


def test_flag_rule_needs_two_reducers_in_each_of_three_rounds_and_ignores_self_reports():
    a, b, c, m = "A", "B", "C", "M"

    def row(round_, reducer):
        return dict(member=m, round=round_, reducer=reducer, max_ratio=5.0, min_ratio=4.0)

    rows = [row(1, a), row(1, b), row(2, a), row(2, b),  # two rounds with two reducers
            row(3, a), row(4, b),  # two reducers, but in two rounds
            row(5, m), row(5, c)]  # itself + 1 other
    assert flags(rows) == {}
    rows.append(row(7, c))
    rows.append(row(7, b))
    assert flags(rows)[m]["rounds"] == [1, 2, 7] and flags(rows)[m]["reducers"] == 3 and flags(rows)[m]["flagged_at"] == 7
    peers = [{"peer_id": m, "confirmed_tokens": 5, "unconfirmed_tokens": 1},
             {"peer_id": a, "confirmed_tokens": 2, "unconfirmed_tokens": 0}]
    apply_flags(peers, flags(rows))
    assert peers == [{"peer_id": m, "confirmed_tokens": 0, "unconfirmed_tokens": 6, "flagged": True, "flag": flags(rows)[m]},
                     {"peer_id": a, "confirmed_tokens": 2, "unconfirmed_tokens": 0, "flagged": False}]


def test_version_2_ledger_upgrades_and_stores_outlier_reports(tmp_path, clock):
    import hashlib

    path = tmp_path / "l.sqlite3"
    Store(path, migrations=MIGRATIONS[:2]).close()  # a ledger made before outlier reports
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS) >= 3
    items = []
    for reducer in (1, 2):
        m = _outliers(clock, reducer, 0, 4, 9)
        body = seal(m, identity(reducer))
        items.append(Incoming(body, hashlib.sha256(body).digest(), m, clock.now))
    assert store.apply(items) == ["accepted", "accepted"]
    assert store.apply(items[:1]) == ["duplicate"]
    assert sorted(r["reducer"] for r in store.outlier_rows()) == sorted(identity(i).peer_id for i in (1, 2))
    assert store.peers() == []  # an outlier report is about others: it makes no peer row of its own
    store.close()
