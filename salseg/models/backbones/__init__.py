"""Backbones (encoders) that architectures build on: Swin Transformer v1 (``swin``)."""
