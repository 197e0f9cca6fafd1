"""sim: the swarm simulator (to be filled in)."""
