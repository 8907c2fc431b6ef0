"""Lightning's model summary without its FLOPs column when nothing was counted.

Lightning counts FLOPs only for a module with an ``example_input_array``; salseg's tasks have
none (the input size comes from the data), so the stock table shows a column of zeros and "0
Total Flops".  This summary drops both when the total is 0 and is otherwise Lightning's.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelSummary as _LightningModelSummary


class ModelSummary(_LightningModelSummary):
    """``lightning.pytorch.callbacks.ModelSummary`` minus an all-zero FLOPs column."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int,
                  trainable_parameters: int, model_size: float,
                  total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        import logging

        from lightning.pytorch.utilities.model_summary.model_summary import (
            _format_summary_table,
        )

        if total_flops:
            _LightningModelSummary.summarize(summary_data, total_parameters, trainable_parameters,
                                             model_size, total_training_modes, total_flops,
                                             **summarize_kwargs)
            return
        columns = [c for c in summary_data if c[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size,
                                      total_training_modes, total_flops, *columns)
        table = "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops"))
        logging.getLogger("lightning.pytorch.callbacks.model_summary").info("\n" + table)


__all__ = ["ModelSummary"]
