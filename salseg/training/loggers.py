"""Lightning loggers that keep a run's history across resumes.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so resuming a run
(``ckpt_path=<run>/checkpoints/last.ckpt``) lost every metric logged before the resume.
``CSVLogger`` here keeps the file: new rows are appended (the header is widened when new
metric names appear), and rows of the interrupted run at or after the first step logged by the
resumed run are dropped once, since the resumed run logs those steps again.
TensorBoard keeps its event files by itself.
"""
from __future__ import annotations

import csv
import io
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter as _LightningWriter

from salseg.atomic import write_text_atomic


class HistoryKeepingWriter(_LightningWriter):
    """CSV experiment writer that continues an existing ``metrics.csv`` instead of deleting it."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        # rows of the interrupted run after the resumed step are trimmed once, at the first save
        self._trim_pending = os.path.isfile(self.metrics_file_path)
        if self._trim_pending:
            with open(self.metrics_file_path, newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = list(header)

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        return

    def _previous_rows(self) -> list[dict[str, str]]:
        with open(self.metrics_file_path, newline="") as fh:
            return list(csv.DictReader(fh))

    def _rewrite(self, rows: list[dict[str, str]], keys: list[str]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(out.getvalue(), self.metrics_file_path, overwrite=True)

    def save(self) -> None:
        if self.metrics and self._trim_pending:
            self._trim_pending = False
            first = min(int(m["step"]) for m in self.metrics)
            rows = self._previous_rows()
            kept = [r for r in rows if r.get("step", "") == "" or int(float(r["step"])) < first]
            if len(kept) != len(rows):
                self._rewrite(kept, list(self.metrics_keys))
        super().save()


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that keeps ``metrics.csv`` when a run resumes."""

    @property
    @rank_zero_experiment
    def experiment(self) -> HistoryKeepingWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = HistoryKeepingWriter(log_dir=self.log_dir)
        return self._experiment
