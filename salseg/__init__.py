"""salseg: training, evaluation and inference for U2-Net, U2-NetP and IS-Net."""
import os as _os

# albumentations checks PyPI for a newer version at import; salseg must work offline and
# never phone home, so that check is off unless the user turned it on explicitly.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
