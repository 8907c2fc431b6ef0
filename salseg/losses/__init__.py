"""Losses: deep-supervision BCE (U2-Net, IS-Net) and IS-Net feature synchronisation."""
from salseg.losses.bce import bce
from salseg.losses.deep_supervision import DeepSupervisionBCE
from salseg.losses.feature_sync import FeatureSyncLoss, feature_distance

__all__ = ["bce", "DeepSupervisionBCE", "FeatureSyncLoss", "feature_distance"]
