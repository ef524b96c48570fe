"""`python -m sgone ...`: the same as the `sgone` command."""
import sys

from sgone.cli import main

if __name__ == "__main__":
    sys.exit(main())
