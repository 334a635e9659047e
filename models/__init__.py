"""PyTorch decoders, training and ONNX export (needs the ``train`` extra; never on the live path)."""
