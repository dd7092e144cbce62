"""Command line: parse, call the library, print the result, map errors to exit codes."""
from __future__ import annotations

import json
import logging
import os
import sys
import time

import click

from .errors import VoxportError


def _exit_on_sigterm():
    """A killed run still removes its temporary files (the `finally` blocks run on SystemExit)."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _quiet():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger().setLevel(logging.ERROR)
    for name in ("torch", "torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _progress(msg: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {msg} ...", err=True)


def _emit(result, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.to_table())


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VoxportError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)


def _arch_choice():
    from .archs import arch_names

    return click.Choice(arch_names())


def _source_options(f):
    f = click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-init.")(f)
    f = click.option("--random-init", is_flag=True, help="Seeded random weights (offline demos and tests).")(f)
    f = click.option("--checkpoint", help="Local folder in the upstream layout, or a hub id.")(f)
    f = click.option("--arch", required=True, type=_arch_choice(), help="Architecture.")(f)
    return f


def _check_source(checkpoint, random_init):
    if bool(checkpoint) == bool(random_init):
        raise VoxportError("pass exactly one of --checkpoint FOLDER_OR_HUB_ID and --random-init")


@click.group(cls=_Group)
@click.version_option(package_name="voxport")
def main():
    """Export speech models to ONNX folders for Transformers.js, verified against PyTorch."""
    _quiet()
    _exit_on_sigterm()


@main.command("export-model")
@_source_options
@click.option("--opset", type=click.Choice(["17", "18"]), default="18", show_default=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True)
def export_cmd(arch, checkpoint, random_init, seed, opset, output, force, as_json):
    """Export a checkpoint to one simplified ONNX file."""
    from .export import export_model

    _check_source(checkpoint, random_init)
    if os.path.exists(output) and not force:
        raise VoxportError(f"{output} already exists; pass --force to overwrite it")
    _emit(export_model(arch, output, checkpoint=checkpoint, random_init=random_init, seed=seed, opset=int(opset), progress=_progress), as_json)


@main.command("quantize")
@click.argument("input_path", metavar="IN.onnx")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Output file (not needed with --explain alone).")
@click.option("--mode", default="q8", show_default=True, type=click.Choice(["q8", "int8", "uint8", "fp16", "q4", "q4f16"]),
              help="Transformers.js dtype to produce.")
@click.option("--method", default=None, type=click.Choice(["weight-only", "dynamic"]), help="q8 method [default: weight-only].")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scales per output channel.")
@click.option("--explain", is_flag=True, help="Rank nodes by the error that quantizing each alone causes on the verify suite.")
@click.option("--target-delta", type=float, default=None,
              help="Keep the fewest most-sensitive nodes float so max |dp| <= this; writes --output.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True)
def quantize_cmd(input_path, output, mode, method, per_channel, explain, target_delta, force, as_json):
    """Quantize an exported file (the front end stays float)."""
    from .quantize import quantize

    if not os.path.isfile(input_path):
        raise VoxportError(f"ONNX file not found: {input_path}")
    if output is None and not (explain and target_delta is None):
        raise VoxportError("pass --output OUT.onnx (or --explain alone to only rank the nodes)")
    if output and os.path.exists(output) and not force:
        raise VoxportError(f"{output} already exists; pass --force to overwrite it")
    extra = []
    if explain or target_delta is not None:
        from .quantize.sensitivity import explain as run_explain

        report = run_explain(input_path, mode=mode, method=method, target=target_delta, progress=_progress)
        _emit(report, as_json)
        extra = report.kept_float
        if output is None:
            return
    result = quantize(input_path, output, mode=mode, method=method, per_channel=per_channel, extra_float=extra)
    if not as_json:
        _emit(result, as_json)


@main.command("verify")
@click.argument("target", nargs=-1, required=True)
@click.option("--arch", default=None, help="With ONNX files: the architecture of the reference.")
@click.option("--checkpoint", default=None, help="With ONNX files: the reference checkpoint.")
@click.option("--random-init", is_flag=True)
@click.option("--seed", type=int, default=0)
@click.option("--audio", multiple=True, type=click.Path(), help="Extra audio files (any rate/channels), repeatable.")
@click.option("--runtime", default="python", show_default=True,
              help="Comma-separated: python (onnxruntime), node / browser / webgpu (Transformers.js; FOLDER only).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_cmd(target, arch, checkpoint, random_init, seed, audio, runtime, as_json):
    """Check a built FOLDER (or ONNX files) against PyTorch. Exit 1 when a file fails."""
    from .verify.check import verify, verify_folder

    if len(target) == 1 and os.path.isdir(target[0]):
        report = verify_folder(target[0], audio=list(audio), runtime=runtime)
    else:
        missing = [t for t in target if not os.path.isfile(t)]
        if missing:
            raise VoxportError(f"not found: {missing[0]}; pass a folder made by `voxport build` or .onnx files")
        if runtime != "python":
            raise VoxportError("the Transformers.js runtimes load a folder; pass a folder made by `voxport build`")
        if not arch:
            raise VoxportError("with ONNX files, pass --arch and --checkpoint (or --random-init) for the reference")
        _check_source(checkpoint, random_init)
        from .archs import get_arch

        loaded = get_arch(arch).load(checkpoint=checkpoint, random_init=random_init, seed=seed)
        report = verify({os.path.basename(t): t for t in target}, loaded, audio=list(audio), runtime=runtime)
    _emit(report, as_json)
    sys.exit(0 if report.passed else 1)


@main.command("build")
@_source_options
@click.option("--output-dir", "-o", default=None, help="Folder to write [default: artifacts/<arch>-onnx].")
@click.option("--opset", type=click.Choice(["17", "18"]), default="18", show_default=True)
@click.option("--quantize", "modes", default="q8", show_default=True,
              help="Comma-separated dtypes to build besides fp32: q8,fp16,int8,uint8,q4,q4f16.")
@click.option("--q8-method", default=None, type=click.Choice(["weight-only", "dynamic"]),
              help="How the q8 file is made [default: weight-only].")
@click.option("--q8-target", type=float, default=None,
              help="Keep the most sensitive nodes float until the q8 file's max |dp| on the suite is at most this.")
@click.option("--audio", multiple=True, type=click.Path(), help="Extra audio files for verify, repeatable.")
@click.option("--runtime", default="python", show_default=True,
              help="Where to verify, comma-separated: python, node, browser, webgpu.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--json", "as_json", is_flag=True)
def build_cmd(arch, checkpoint, random_init, seed, output_dir, opset, modes, q8_method, q8_target, audio, runtime, force, as_json):
    """All stages: export, simplify, quantize, verify, package."""
    from .build import BuildFailed, build

    _check_source(checkpoint, random_init)
    output_dir = output_dir or os.path.join("artifacts", f"{arch}-onnx")
    try:
        result = build(arch, output_dir, checkpoint=checkpoint, random_init=random_init, seed=seed, opset=int(opset),
                       quantize_modes=tuple(m.strip() for m in modes.split(",") if m.strip()), q8_method=q8_method,
                       q8_target=q8_target, audio=list(audio), force=force, progress=_progress,
                       runtimes=tuple(r.strip() for r in runtime.split(",") if r.strip()))
    except BuildFailed as e:
        _emit(e.result.verify, as_json)
        raise
    _emit(result, as_json)


@main.command("bench")
@click.argument("folder", type=click.Path())
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--runs", type=int, default=20, show_default=True)
@click.option("--seconds", default="0.75,3", show_default=True, help="Input lengths in seconds, comma-separated.")
@click.option("--runtime", default="python", show_default=True,
              help="Comma-separated: python (PyTorch + onnxruntime), node, browser, webgpu (Transformers.js).")
@click.option("--json", "as_json", is_flag=True)
def bench_cmd(folder, threads, runs, seconds, runtime, as_json):
    """Size and latency of PyTorch eager and every ONNX file in FOLDER."""
    from .bench import bench

    if not os.path.isdir(folder):
        raise VoxportError(f"folder not found: {folder}; pass a folder made by `voxport build`")
    try:
        secs = tuple(float(s) for s in seconds.split(","))
    except ValueError:
        raise VoxportError(f"--seconds must be numbers separated by commas, got '{seconds}'") from None
    _emit(bench(folder, seconds=secs, threads=threads, runs=runs,
                runtimes=tuple(r.strip() for r in runtime.split(",") if r.strip())), as_json)


if __name__ == "__main__":
    main()
