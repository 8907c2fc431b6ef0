"""Shim: ``python predict.py ...`` is ``salseg-predict ...`` (see salseg/cli/predict.py)."""
from salseg.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
