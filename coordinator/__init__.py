"""coordinator: the contribution ledger service (to be filled in)."""
