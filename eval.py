"""Shim for ``python eval.py ...`` = ``salseg-eval ...`` (see salseg/cli/eval.py)."""
from salseg.cli.eval import main

if __name__ == "__main__":
    main()
