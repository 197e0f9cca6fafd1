"""node.policies: pure decision functions shared with sim (no torch, hivemind, I/O or clock)."""
