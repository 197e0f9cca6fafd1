"""``python -m sim ...``: the same as ``swarm sim ...``."""
import sys

from sim.cli import main

sys.exit(main())
