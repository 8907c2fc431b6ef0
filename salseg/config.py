"""Where the Hydra configuration tree lives: ``configs/`` at the repository root."""
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
