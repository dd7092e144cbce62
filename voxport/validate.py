"""Checks on a run's inputs, made before any export work: a mistake costs seconds, not a build."""
from __future__ import annotations

import os

from .errors import VoxportError

OPSETS = (17, 18)


def check_build_inputs(arch: str, output_dir: str, force: bool = False, checkpoint=None, random_init=False,
                       quantize_modes=(), runtimes=("python",), audio=(), opset=18, q8_method=None, q8_target=None):
    """Architecture, source, options, runtimes, output location and audio files; returns the arch spec."""
    from .archs import get_arch
    from .archs.source import check_checkpoint
    from .files import check_output_dir
    from .quantize import MODES, Q8_METHODS
    from .verify.runtimes import get_runtime

    spec = get_arch(arch)
    if bool(checkpoint) == bool(random_init):
        raise VoxportError("pass exactly one of --checkpoint FOLDER_OR_HUB_ID and --random-init")
    if checkpoint:
        check_checkpoint(checkpoint)
    unknown = [m for m in quantize_modes if m not in MODES]
    if unknown:
        raise VoxportError(f"unknown quantization mode '{unknown[0]}'; choose from: {', '.join(MODES)}")
    if int(opset) not in OPSETS:
        raise VoxportError(f"opset {opset} is not supported; use one of {', '.join(map(str, OPSETS))}")
    if q8_method is not None and q8_method not in Q8_METHODS:
        raise VoxportError(f"unknown q8 method '{q8_method}'; choose one of: {', '.join(Q8_METHODS)}")
    if q8_target is not None and not 0 < q8_target < 1:
        raise VoxportError(f"--q8-target is a max |dp| between 0 and 1, got {q8_target}")
    for r in runtimes:
        get_runtime(r).check()  # unknown names, missing node / chromium
    check_output_dir(output_dir, force)
    check_audio_files(audio, spec.sample_rate)
    return spec


def check_audio_files(paths, sample_rate: int = 16000, min_samples: int = 1) -> None:
    """Each file (or every audio file of a folder) must be readable audio, non-empty, finite and at least
    `min_samples` long."""
    from .errors import AudioError
    from .infer.audio import expand_paths
    from .verify.audio import load_audio

    for path in paths or ():
        if os.path.isdir(path) and not expand_paths([path]):
            raise AudioError(f"{path} holds no audio files (.wav, .flac, .ogg, .mp3 ...); pass audio files or a folder of them")
    for path in expand_paths(paths or ()):
        load_audio(path, sample_rate, min_samples)
