"""``make demo``: the main job on the embedded synthetic data (arrives with the training issue)."""
import sys

sys.stderr.write(
    "make demo: not available yet — it needs the training pipeline (issue 5): generate the\n"
    "synthetic set, train U2-NetP on CPU, evaluate, write predictions and cutouts.\n")
sys.exit(2)
