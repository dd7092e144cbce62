"""voxport: speech models to verified ONNX folders for Transformers.js and ONNX Runtime."""
__version__ = "0.1.0"
