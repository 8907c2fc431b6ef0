"""Models: RSU blocks, U2-Net, U2-NetP, IS-Net and its GT encoder, plus weight loading."""
from salseg.models.blocks import REBNCONV, RSU4, RSU4F, RSU5, RSU6, RSU7
from salseg.models.isnet import ISNet, ISNetGTEncoder
from salseg.models.registry import (
    MODELS,
    canonical_name,
    create_model,
    features,
    official_flat,
    prediction_logits,
    side_logits,
    to_official,
)
from salseg.models.spec import ModelSpec, get_spec
from salseg.models.u2net import U2Net, U2NetP

__all__ = [
    "REBNCONV", "RSU4", "RSU4F", "RSU5", "RSU6", "RSU7", "ISNet", "ISNetGTEncoder", "U2Net",
    "U2NetP", "MODELS", "ModelSpec", "canonical_name", "create_model", "features", "get_spec",
    "official_flat", "prediction_logits", "side_logits", "to_official",
]
