"""``python -m observer_assets.track_b.capture``: how the supervisor starts the capture."""

import sys

from observer_assets.track_b.capture.cli import main

if __name__ == "__main__":
    sys.exit(main())
