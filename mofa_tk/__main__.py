"""`python -m mofa_tk <command> ...`: the `mofa` console script (mofa_tk/cli.py)."""
import sys

from mofa_tk.cli import main

sys.exit(main())
