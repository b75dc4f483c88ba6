"""`python -m kohya_multiplier ...` (also `accelerate launch -m kohya_multiplier ...`)."""

import sys

from kohya_multiplier.cli import main

if __name__ == "__main__":
    sys.exit(main())
