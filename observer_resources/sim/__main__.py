"""``python -m observer_resources.sim``: same as the ``observer-sim`` console script."""

import sys

from observer_resources.sim.cli import main

sys.exit(main())
