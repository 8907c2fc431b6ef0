"""The project's losses in the call signatures of the outside parity check.

``loss_fns()`` returns the dict that ``../shared/reference/check_parity.py --project`` expects.
The losses are the cards' default loss terms (:mod:`salseg.losses.terms`), the very
configuration training uses.  The parity check passes official *probabilities*, so the terms
run with ``probabilities=True``, which is the official ``nn.BCELoss`` computation; training
applies the same terms to logits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from salseg.losses.terms import LossTerms, parse_loss
from salseg.models.card import ModelOutputs, get_card


def _terms(card: str, **sync) -> LossTerms:
    terms = parse_loss(get_card(card).loss)
    for term in terms:
        if term.criterion == "feature" and "mode" in sync:
            term.mode = sync["mode"]
    return LossTerms(terms)


def _outputs(sides: Sequence[torch.Tensor], features: Sequence[torch.Tensor] = ()) -> ModelOutputs:
    sides = list(sides)
    return ModelOutputs(sides=sides, features=list(features), prediction=sides[0])


def u2net_loss(outputs7: Sequence[torch.Tensor], target: torch.Tensor):
    total, terms = _terms("u2net")(_outputs(outputs7), {"mask": target}, probabilities=True)
    return terms["bce_sides1"], total


def isnet_loss(sides6: Sequence[torch.Tensor], target: torch.Tensor):
    terms = LossTerms([t for t in parse_loss(get_card("isnet").loss) if t.target == "mask"])
    total, logged = terms(_outputs(sides6), {"mask": target}, probabilities=True)
    return logged["bce_sides1"], total


def isnet_kl_loss(sides6, target, dfs6, fs6, mode: str = "MSE"):
    total, logged = _terms("isnet", mode=mode)(
        _outputs(sides6, dfs6), {"mask": target, "gt_encoder": list(fs6)}, probabilities=True)
    return logged["bce_sides1"], total


def loss_fns() -> dict:
    return {"u2net": u2net_loss, "isnet": isnet_loss, "isnet_kl": isnet_kl_loss,
            "isnet_kl_mode": isnet_kl_loss}
