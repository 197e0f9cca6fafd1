"""node.policies.roles: reducer or client from the --role flag and the dial-back verdict."""
from __future__ import annotations

import pytest

from node.policies.roles import choose_role


def test_auto_follows_the_verdict_and_unknown_stays_a_reducer():
    assert choose_role("auto", "public") == "reducer"
    assert choose_role("auto", "private") == "client"
    assert choose_role("auto", "unknown") == "reducer"


def test_the_flag_overrides_the_verdict():
    assert choose_role("client", "public") == "client"
    assert choose_role("reducer", "private") == "reducer"
    assert choose_role("validator", "public") == "validator"
    with pytest.raises(ValueError, match="auto, reducer, client or validator"):
        choose_role("boss", "public")
