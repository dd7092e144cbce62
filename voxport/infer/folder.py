"""A built folder as Transformers.js sees it: config.json, preprocessor_config.json, onnx/<dtype file>,
tokenizer.json for CTC. onnxruntime only; nothing here imports PyTorch."""
from __future__ import annotations

import json
import math
import os

import numpy as np

from ..errors import VoxportError
from ..files import DTYPE_FILES, SOURCE_FILE


class FolderError(VoxportError):
    pass


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise FolderError(f"cannot read {path} ({type(e).__name__}); pass a folder made by `voxport build`") from None


class OnnxModel:
    """One ONNX file in an onnxruntime session: (input_values [B, N], attention_mask or None) -> {output name: array}.

    attention_mask is fed only when the graph declares it (all ones when the caller has none), as Transformers.js does.
    """

    def __init__(self, path: str, threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "input_values" not in self.input_names:
            raise FolderError(f"{path} has no input named input_values (inputs: {', '.join(self.input_names)})")

    @property
    def uses_mask(self) -> bool:
        return "attention_mask" in self.input_names

    def __call__(self, input_values: np.ndarray, attention_mask: np.ndarray | None = None) -> dict:
        feed = {"input_values": np.ascontiguousarray(input_values, dtype=np.float32)}
        if self.uses_mask:
            feed["attention_mask"] = attention_mask if attention_mask is not None else np.ones(input_values.shape, np.int64)
        return dict(zip(self.output_names, self.session.run(None, feed)))


def ctc_vocab(folder: str):
    """The folder's CTC vocabulary (tokenizer.json, or vocab.json from an older layout) and decoding settings
    (tokenizer_config.json), for voxport.ctc: transformers' pipeline decode by default."""
    from ..ctc import CtcVocab

    tcfg_path = os.path.join(folder, "tokenizer_config.json")
    tcfg = _read_json(tcfg_path) if os.path.isfile(tcfg_path) else {}
    tcfg = {k: (v.get("content") if isinstance(v, dict) else v) for k, v in tcfg.items()}
    tok_path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(tok_path):
        doc = _read_json(tok_path)
        vocab = dict((doc.get("model") or {}).get("vocab") or {})
        added = doc.get("added_tokens") or []
        vocab.update({t["content"]: int(t["id"]) for t in added})
        special = [int(t["id"]) for t in added if t.get("special")]  # what Transformers.js skips
    elif os.path.isfile(os.path.join(folder, "vocab.json")):
        vocab, special = _read_json(os.path.join(folder, "vocab.json")), []
    else:
        raise FolderError(f"{folder} has no tokenizer.json (or vocab.json); a CTC folder needs its vocabulary")
    if not vocab:
        raise FolderError(f"{tok_path} holds no vocabulary; rebuild the folder with `voxport build`")
    keep = {vocab.get(tcfg.get("pad_token", "<pad>")), vocab.get(tcfg.get("word_delimiter_token", "|"))}
    return CtcVocab.from_config(vocab, tcfg, [i for i in special if i not in keep])


class ModelFolder:
    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise FolderError(f"folder not found: {path}; pass a folder made by `voxport build`")
        cfg_path = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_path):
            raise FolderError(f"{path} has no config.json; pass a folder made by `voxport build`")
        self.path = path
        self.config = _read_json(cfg_path)
        pre_path = os.path.join(path, "preprocessor_config.json")
        self.preprocessor = _read_json(pre_path) if os.path.isfile(pre_path) else {}
        self.sample_rate = int(self.preprocessor.get("sampling_rate", 16000))
        # Wav2Vec2FeatureExtractor's default is do_normalize=True, in transformers and Transformers.js alike
        self.do_normalize = bool(self.preprocessor.get("do_normalize", True))
        self.id2label = {int(k): v for k, v in (self.config.get("id2label") or {}).items()}
        self.is_ctc = any(a.endswith("ForCTC") for a in self.config.get("architectures") or [])
        strides = self.config.get("conv_stride")
        # transformers' inputs_to_logits_ratio: samples per CTC frame
        self.inputs_to_logits_ratio = int(math.prod(strides)) if strides else 1
        self.files = {d: os.path.join(path, "onnx", n) for d, n in DTYPE_FILES.items() if os.path.isfile(os.path.join(path, "onnx", n))}
        if not self.files:
            raise FolderError(f"{path}/onnx has none of {', '.join(DTYPE_FILES.values())}; pass a folder made by `voxport build`")
        src = os.path.join(path, SOURCE_FILE)
        self.record = _read_json(src) if os.path.isfile(src) else {}
        self._decoder = None
        self._graph_info = None

    @property
    def task(self) -> str:
        """The task the build recorded in the graph (feature-extraction for embedding models), else from config.json."""
        return self._graph()[1].get("voxport.task") or ("automatic-speech-recognition" if self.is_ctc else "audio-classification")

    @property
    def output_names(self) -> list:
        return self._graph()[0]

    def _graph(self) -> tuple:
        """(output names, metadata) of the smallest file, read once without its external data."""
        if self._graph_info is None:
            import onnx

            m = onnx.load(min(self.files.values(), key=os.path.getsize), load_external_data=False)
            self._graph_info = ([o.name for o in m.graph.output], {p.key: p.value for p in m.metadata_props})
        return self._graph_info

    def default_dtype(self) -> str:
        return "fp32" if "fp32" in self.files else next(iter(self.files))

    def dtypes(self, spec: str | None) -> list:
        """'all', a comma-separated list, or None (the default file)."""
        if not spec:
            return [self.default_dtype()]
        if spec == "all":
            return list(self.files)
        out = [d.strip() for d in spec.split(",") if d.strip()]
        for d in out:
            if d not in DTYPE_FILES:
                raise FolderError(f"unknown dtype '{d}'; choose from: {', '.join(DTYPE_FILES)}")
            if d not in self.files:
                raise FolderError(f"{self.path}/onnx has no {DTYPE_FILES[d]} (dtype {d}); available: {', '.join(self.files)}")
        return out

    def open(self, dtype: str, threads: int = 0) -> OnnxModel:
        return OnnxModel(self.files[dtype], threads)

    @property
    def decoder(self):
        if self._decoder is None:
            self._decoder = ctc_vocab(self.path)
        return self._decoder

    def min_samples(self, model: OnnxModel | None = None) -> int:
        """Shortest input the model takes: the exporter's record, else from the conv feature encoder (2 frames)."""
        if model is not None and model.metadata.get("voxport.min_samples"):
            return int(model.metadata["voxport.min_samples"])
        kernels, strides = self.config.get("conv_kernel"), self.config.get("conv_stride")
        if kernels and strides:
            n = 1
            while True:
                frames = n
                for k, s in zip(kernels, strides):
                    frames = (frames - k) // s + 1 if frames >= k else 0
                if frames >= 2:
                    return n
                n += 1
        return 1
