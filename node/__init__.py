"""node: the volunteer daemon (to be filled in)."""
