"""Signed agreement records: only a member can write its own record of failed reducers.

hivemind's DHT lets any peer store any subkey under any key, so an unsigned record posted under a
member's peer id could be a forgery, or overwrite the member's real one. ``AgreementRecords`` is a
DHT record validator (hivemind's ``RecordValidatorBase``, the mechanism of its ``[owner:<RSA key>]``
records) for subkeys of the form ``[agree:<peer id>]``: the value carries an Ed25519 signature by
the key inside that peer id (``protocol.identity``: the very key p2pd authenticates with) over the
record's DHT key, subkey, value and expiration (``agreement.record_message``). Every honest DHT node
refuses to store an unsigned or forged record and drops one a peer returns; a record is signed in
the DHT process of its poster (``sign_value``), the only process holding the key. Other records
pass untouched.

Wire layout of a signed value (hard to undo: every node of a run must read it alike): the
MessagePack value hivemind stores, then ``SIG_MAGIC`` (8 bytes), then the 64-byte signature.
"""
from __future__ import annotations

from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils.serializer import MSGPackSerializer

from node.policies.agreement import record_message
from protocol import Identity
from protocol.errors import SignatureError
from protocol.identity import verify_signature

__all__ = ["AgreementRecords", "agreement_subkey", "poster_of"]

SUBKEY_PREFIX = "[agree:"
SIG_MAGIC = b"capasig1"
_SUFFIX = len(SIG_MAGIC) + 64


def agreement_subkey(peer_id: str) -> str:
    """The subkey a member posts its record under."""
    return f"{SUBKEY_PREFIX}{peer_id}]"


def poster_of(subkey: object) -> str | None:
    """The peer id an agreement subkey names, or None for any other subkey."""
    if isinstance(subkey, str) and subkey.startswith(SUBKEY_PREFIX) and subkey.endswith("]") and len(subkey) <= 160:
        return subkey[len(SUBKEY_PREFIX):-1]
    return None


def _poster(record: DHTRecord) -> str | None:
    try:
        return poster_of(MSGPackSerializer.loads(record.subkey))
    except Exception:  # a regular value's marker, or bytes that are no MessagePack
        return None


class AgreementRecords(RecordValidatorBase):
    """Signs our agreement records and refuses anyone's that its poster did not sign."""

    def __init__(self, identity: Identity):
        self.identity = identity

    def validate(self, record: DHTRecord) -> bool:
        poster = _poster(record)
        if poster is None:
            return True  # not an agreement record
        value = record.value
        if len(value) <= _SUFFIX or value[-_SUFFIX:-64] != SIG_MAGIC:
            return False
        try:
            verify_signature(poster, value[-64:], record_message(record.key, record.subkey, value[:-_SUFFIX],
                                                                 record.expiration_time))
        except SignatureError:
            return False
        return True

    def sign_value(self, record: DHTRecord) -> bytes:
        if _poster(record) != self.identity.peer_id:
            return record.value  # not ours to sign: a record under another name stays unsigned, and is refused
        signature = self.identity.sign(record_message(record.key, record.subkey, record.value, record.expiration_time))
        return record.value + SIG_MAGIC + signature

    def strip_value(self, record: DHTRecord) -> bytes:
        return record.value[:-_SUFFIX] if _poster(record) is not None else record.value
