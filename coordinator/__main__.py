"""``python -m coordinator``: the same as ``swarm coordinator``."""
import sys

from .cli import main

sys.exit(main())
