import json
import os

import numpy as np
import pytest


def save_ecapa_checkpoint(folder, C=64, seed=0, fmt="safetensors"):
    """A random ECAPA in the upstream hub layout: config.json {"C": ...} + model.safetensors (or pytorch_model.bin)."""
    import torch

    from voxport.archs.ecapa import build_model, calibrate

    torch.manual_seed(seed)
    model = build_model(C)
    calibrate(model, seed)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"C": C}, f)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, os.path.join(folder, "model.safetensors"))
    else:
        torch.save(sd, os.path.join(folder, "pytorch_model.bin"))
    return folder


@pytest.fixture(scope="session")
def ecapa_ckpt(tmp_path_factory):
    return save_ecapa_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "voice-gender-classifier"))


@pytest.fixture(scope="session")
def ecapa_folder(tmp_path_factory, ecapa_ckpt):
    """A small (C=64) build from an upstream-layout checkpoint folder."""
    from voxport.build import build

    out = str(tmp_path_factory.mktemp("build") / "ecapa-onnx")
    build("ecapa", out, checkpoint=ecapa_ckpt)
    return out


def write_wav(path, seconds=1.5, sr=44100, channels=2, f0=180):
    import soundfile as sf

    from voxport.archs.suite import speech_like

    x = speech_like(int(seconds * sr), f0, seed=3, sr=sr)
    data = np.stack([x] * channels, 1) if channels > 1 else x
    sf.write(path, data, sr)
    return path


def other_weights(src, dst):
    """A copy of an ECAPA checkpoint whose weights differ slightly (same layout, another sha256)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(os.path.join(dst, "model.safetensors"))
    sd["fc7.bias"] = sd["fc7.bias"] + torch.tensor([0.5, -0.5])
    save_file(sd, os.path.join(dst, "model.safetensors"))
    return str(dst)
