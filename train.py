"""Train a model: ``python train.py model=isnet`` (see docs/training.md)."""
from salseg.cli.train import main

if __name__ == "__main__":
    main()
