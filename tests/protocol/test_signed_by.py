"""Documents of the run key open only for the pinned signer."""
import pytest

from protocol import Identity, SignatureError, open_signed_by, seal
from protocol.messages import Heartbeat


def _heartbeat(identity: Identity) -> bytes:
    return seal(Heartbeat(run_id="r", peer_id=identity.peer_id, seq=1, sent_at=1.0, round=0, status="training"), identity)


def test_opens_for_the_pinned_signer() -> None:
    key = Identity.generate()
    assert open_signed_by(_heartbeat(key), key.peer_id).sender == key.peer_id


def test_refuses_another_valid_signer() -> None:
    key, other = Identity.generate(), Identity.generate()
    with pytest.raises(SignatureError, match="pinned key"):
        open_signed_by(_heartbeat(other), key.peer_id)
