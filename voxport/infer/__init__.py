"""Inference on a built folder with onnxruntime only (no PyTorch): audio, batching, windows, CTC chunks."""
from .audio import ClipError, read_audio
from .folder import ModelFolder, OnnxModel
from .predict import Options, Predictor
from .run import RunReport, run

__all__ = ["ClipError", "ModelFolder", "OnnxModel", "Options", "Predictor", "RunReport", "read_audio", "run"]
