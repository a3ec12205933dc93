"""``python -m local_exchange``: same as the ``observer-sim`` console script."""

import sys

from local_exchange.cli import main

sys.exit(main())
