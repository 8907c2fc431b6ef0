"""The project's losses in the call signatures of the outside parity check.

``loss_fns()`` returns the dict that ``../shared/reference/check_parity.py --project`` expects;
``birefnet_loss`` is the ``--loss`` function of BiRefNet's checker
(``check_birefnet.py ... --loss salseg.losses.parity:birefnet_loss``).  These names and
signatures are fixed by the outside checkers, so this is the one module of ``salseg.losses``
that names architectures.
The losses are the cards' default loss terms (:mod:`salseg.losses.terms`), the very
configuration training uses.  The parity check passes official *probabilities*, so the terms
run with ``probabilities=True``, which is the official ``nn.BCELoss`` computation; training
applies the same terms to logits.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from salseg.losses.terms import LossTerms, parse_loss
from salseg.models.birefnet import PIX_CRITERIA, birefnet_loss_config
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


def birefnet_loss(preds: Sequence[torch.Tensor], gdt_preds: Sequence[torch.Tensor],
                  gdt_labels: Sequence[torch.Tensor], gt: torch.Tensor,
                  lambdas: Mapping[str, float]) -> dict:
    """The official loss of BiRefNet's training step: ``{"loss", "loss_pix", "loss_gdt"}`` and
    the official ``loss_dict`` entries (per criterion, the weighted term averaged over the
    levels)."""
    preds = list(preds)
    terms = LossTerms.from_config(birefnet_loss_config(lambdas))
    outputs = ModelOutputs(sides=preds, features=[], prediction=preds[-1],
                           aux={"gdt_preds": list(gdt_preds), "gdt_labels": list(gdt_labels)})
    total, logged = terms(outputs, {"mask": gt.clamp(0, 1)})
    pix = [c for c in PIX_CRITERIA if lambdas.get(c)]
    out = {"loss": total, "loss_gdt": logged["loss_gdt"],
           "loss_pix": sum((logged[f"loss_{c}"] for c in pix[1:]), start=logged[f"loss_{pix[0]}"])}
    out.update({c: logged[f"loss_{c}"] / len(preds) for c in pix})
    return out
