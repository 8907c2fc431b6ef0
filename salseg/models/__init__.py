"""Models: RSU blocks, U2-Net, U2-NetP, IS-Net and its GT encoder, their model cards, plus
weight loading."""
from salseg.models.blocks import REBNCONV, RSU4, RSU4F, RSU5, RSU6, RSU7
from salseg.models.card import (
    ModelCard,
    ModelOutputs,
    Preprocessing,
    cards,
    get_card,
    register_card,
)
from salseg.models.isnet import ISNet, ISNetGTEncoder
from salseg.models.registry import (
    canonical_name,
    create_model,
    features,
    model_names,
    official_flat,
    prediction_logits,
    side_logits,
    to_official,
)
from salseg.models.spec import ModelSpec, get_spec
from salseg.models.u2net import U2Net, U2NetP

__all__ = [
    "REBNCONV", "RSU4", "RSU4F", "RSU5", "RSU6", "RSU7", "ISNet", "ISNetGTEncoder", "U2Net",
    "U2NetP", "ModelCard", "ModelOutputs", "ModelSpec", "Preprocessing", "canonical_name",
    "cards", "create_model", "features", "get_card", "get_spec", "model_names", "official_flat",
    "prediction_logits", "register_card", "side_logits", "to_official",
]
