"""Parity of ONNX files against PyTorch."""
