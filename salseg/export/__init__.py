"""Export to ONNX (dynamic batch and size, onnxruntime parity check, rembg-compatible option)
and import of ONNX graphs back into official state dicts."""
