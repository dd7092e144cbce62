"""Command line: parse, call the library, print the result, map errors to exit codes."""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time

import click

from .errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, InternalError, VoxportError
from .quantize import EIGHT_BIT_METHODS, Q8_METHODS


def _exit_on_sigterm():
    """A killed run still removes its temporary files (the `finally` blocks run on SystemExit)."""
    import signal

    def terminated(*_):
        click.echo("error: terminated; temporary files are removed", err=True)
        sys.exit(143)

    signal.signal(signal.SIGTERM, terminated)


def _quiet():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger().setLevel(logging.ERROR)
    for name in ("torch", "torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _progress(msg: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {msg} ...", err=True)


def _json(data) -> str:
    """Strict JSON (NaN and infinities as null): every --json output parses anywhere."""
    from .files import json_safe

    return json.dumps(json_safe(data), indent=2, allow_nan=False)


def _json_safe(data):
    from .files import json_safe

    return json_safe(data)


def _emit(result, as_json: bool) -> None:
    if as_json:
        click.echo(_json(result.to_dict()))
    else:
        click.echo(result.to_table())


# errno values that mean "this path of yours cannot be used", not "voxport broke"
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ENOSPC,
                errno.EDQUOT, errno.ENAMETOOLONG, errno.ENOENT, errno.ELOOP}


def _debug_wanted(ctx=None) -> bool:
    if os.environ.get("VOXPORT_DEBUG", "").strip().lower() not in ("", "0", "false", "no"):
        return True
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.params.get("debug"))


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _classify(e: BaseException) -> tuple:
    """(exit code, one-line message) for an exception that ends a command."""
    if isinstance(e, (KeyboardInterrupt, click.exceptions.Abort)):
        return EXIT_INTERRUPTED, "interrupted; nothing was published"
    if isinstance(e, InternalError):
        return EXIT_INTERNAL, f"{_one_line(e)}; run with --debug for the traceback"
    if isinstance(e, VoxportError):
        return e.exit_code, _one_line(e)
    if isinstance(e, click.UsageError):
        where = e.ctx.command_path if e.ctx is not None else "voxport"
        return EXIT_BAD_INPUT, f"{_one_line(e.format_message()).rstrip('.')}; see `{where} --help`"
    if isinstance(e, click.ClickException):
        return EXIT_BAD_INPUT, _one_line(e.format_message())
    if isinstance(e, OSError) and e.errno in _USER_ERRNOS and (e.filename or e.filename2):
        path = e.filename if e.filename is not None else e.filename2
        return EXIT_BAD_INPUT, f"cannot use {path}: {e.strerror or type(e).__name__}; check the path and its permissions"
    if isinstance(e, MemoryError):
        return EXIT_INTERNAL, "out of memory; try a smaller model or fewer --quantize modes; run with --debug for the traceback"
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return EXIT_INTERNAL, f"voxport failed: {type(e).__name__}{': ' + first if first else ''}; run with --debug for the traceback"


def _fail(e: BaseException, ctx=None):
    code, message = _classify(e)
    if _debug_wanted(ctx):
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Keeps the exit-code contract: no traceback without --debug, one line on stderr, codes 0/1/2/3/130."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:  # options of the group itself
            _fail(e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.exceptions.NoArgsIsHelpError:
            raise
        except (Exception, KeyboardInterrupt) as e:
            _fail(e, ctx)


def _arch_choice():
    from .archs import arch_names

    return click.Choice(arch_names())


def _remember_revision(ctx, param, value):
    ctx.meta["voxport.revision"] = value
    return value


def _revision():
    return click.get_current_context().meta.get("voxport.revision")


def _revision_option(f):
    return click.option("--revision", default=None, expose_value=False, callback=_remember_revision,
                        help="Hub checkpoints: branch, tag or commit to download (recorded as the commit).")(f)


def _check_onnx_file(path: str) -> None:
    """An input .onnx must exist and parse, before any work."""
    import onnx

    if not os.path.isfile(path):
        raise VoxportError(f"ONNX file not found: {path}")
    try:
        onnx.load(path, load_external_data=False)
    except Exception:
        raise VoxportError(f"{path} is not a readable ONNX file; pass a file written by `voxport export-model` or `voxport build`") from None


def _check_runtimes(runtime: str) -> list:
    from .verify.runtimes import get_runtime

    names = [r.strip() for r in runtime.split(",") if r.strip()]
    for r in names:
        get_runtime(r).check()  # unknown names and missing node / chromium, before any work
    return names


def _load_folder_source(folder: str, checkpoint=None):
    """The reference model of a built folder, from its source record (and --checkpoint for a local one)."""
    from .archs.source import load_source
    from .verify.check import read_source

    return load_source(read_source(folder)["source"], checkpoint=checkpoint, revision=_revision(), what=folder)


def _source_options(f):
    f = _revision_option(f)
    f = click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-init.")(f)
    f = click.option("--random-init", is_flag=True, help="Seeded random weights (offline demos and tests).")(f)
    f = click.option("--checkpoint", help="Local folder in the upstream layout, or a hub id.")(f)
    f = click.option("--arch", required=True, type=_arch_choice(), help="Architecture.")(f)
    return f


def _check_source(checkpoint, random_init):
    if bool(checkpoint) == bool(random_init):
        raise VoxportError("pass exactly one of --checkpoint FOLDER_OR_HUB_ID and --random-init")


@click.group(cls=_Group, context_settings={"max_content_width": 110}, epilog="Exit codes: 0 ok, 1 verification failed, 2 wrong input (the message says what to do), "
                                "3 voxport failed (run with --debug), 130 interrupted.")
@click.option("--debug", is_flag=True, help="Show the traceback of any error (also: VOXPORT_DEBUG=1).")
@click.version_option(package_name="voxport")
def main(debug):
    """Export speech models to ONNX folders for Transformers.js, verified against PyTorch."""
    _quiet()
    _exit_on_sigterm()


@main.command("export-model", short_help="Export a checkpoint to one simplified ONNX file.")
@_source_options
@click.option("--opset", type=click.Choice(["17", "18"]), default="18", show_default=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def export_cmd(arch, checkpoint, random_init, seed, opset, output, force, as_json):
    """Export a checkpoint to one simplified ONNX file."""
    from .export import export_model

    from .archs import get_arch
    from .archs.source import check_checkpoint
    from .files import check_output_location

    _check_source(checkpoint, random_init)
    if checkpoint:
        check_checkpoint(checkpoint)
    if os.path.isdir(output):
        raise VoxportError(f"{output} is a folder; pass an .onnx file path to --output")
    if os.path.exists(output) and not force:
        raise VoxportError(f"{output} already exists; pass --force to overwrite it")
    check_output_location(output, "--output")
    _progress("loading checkpoint")
    loaded = get_arch(arch).load(checkpoint=checkpoint, random_init=random_init, seed=seed, revision=_revision())
    _emit(export_model(arch, output, loaded=loaded, opset=int(opset), progress=_progress), as_json)


def _logits_only(path: str) -> bool:
    """Whether the file's one output is `logits` (what --explain ranks by)."""
    import onnx

    return [o.name for o in onnx.load(path, load_external_data=False).graph.output] == ["logits"]


@main.command("quantize", short_help="Quantize an exported file to its tolerance (the front end stays float).")
@click.argument("input_path", metavar="IN.onnx")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Output file (not needed with --explain alone).")
@click.option("--mode", default="q8", show_default=True, type=click.Choice(["q8", "int8", "uint8", "fp16", "q4", "q4f16"]),
              help="Transformers.js dtype to produce.")
@click.option("--method", default=None, type=click.Choice(EIGHT_BIT_METHODS),
              help="8-bit method [default: the architecture's recipe for the mode].")
@click.option("--per-channel/--per-tensor", default=None, help="Weight scales per output channel or per tensor [default: the architecture's recipe].")
@click.option("--explain", is_flag=True, help="Rank nodes by the error that quantizing each alone causes on the verify suite.")
@click.option("--target-delta", type=float, default=None,
              help="Keep the fewest most-sensitive nodes float so max |dp| <= this; writes --output.")
@click.option("--checkpoint", default=None,
              help="For a file exported from a local checkpoint folder: that folder (the PyTorch reference of --explain and "
                   "--target-delta; its weights must have the recorded sha256).")
@click.option("--size-budget", type=float, default=None,
              help="How large keeping nodes float may make the file, as a multiple of its fully quantized size [default: 1.25].")
@click.option("--no-search", is_flag=True, help="Quantize every node the method covers, without checking the tolerance.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def quantize_cmd(input_path, output, mode, method, per_channel, explain, target_delta, checkpoint, size_budget, no_search, force,
                 as_json):
    """Quantize an exported file (the front end stays float). The file is measured against the PyTorch reference
    (rebuilt from the file's source record; --checkpoint for a local folder) and, where it misses its tolerance,
    its most sensitive nodes stay float."""
    from .quantize import quantize

    _check_onnx_file(input_path)
    if output is None and not (explain and target_delta is None):
        raise VoxportError("pass --output OUT.onnx (or --explain alone to only rank the nodes)")
    if output:
        from .files import check_output_location

        if os.path.isdir(output):
            raise VoxportError(f"{output} is a folder; pass an .onnx file path to --output")
        if os.path.exists(output) and not force:
            raise VoxportError(f"{output} already exists; pass --force to overwrite it")
        check_output_location(output, "--output")
    extra, report = [], None
    if (explain or target_delta is not None) and not _logits_only(input_path):
        raise VoxportError("--explain and --target-delta rank nodes by softmax probabilities, and this file is judged by "
                           "its embeddings too; quantize it (the search judges every output), then check it with `voxport verify`")
    if checkpoint:  # the reference of a file exported from a local folder: load it (hashes checked) before any work
        import onnx

        from .archs.source import load_source
        from .onnxutil import read_metadata

        source = json.loads(read_metadata(onnx.load(input_path, load_external_data=False)).get("voxport.source") or "{}")
        if not source:
            raise VoxportError(f"{input_path} has no voxport source record; --checkpoint is only for files voxport exported")
        loaded = load_source(source, checkpoint=checkpoint, what=input_path)
    else:
        loaded = None
    if explain or target_delta is not None:
        from .quantize.sensitivity import explain as run_explain

        report = run_explain(input_path, mode=mode, method=method, target=target_delta, progress=_progress, loaded=loaded)
        extra = report.kept_float
        if output is None:
            _emit(report, as_json)
            return
        if not as_json:
            _emit(report, as_json)
    from .quantize.fit import SEARCH_MODES

    if not no_search and report is None and mode in SEARCH_MODES and loaded is None:
        from .errors import CheckpointError
        from .quantize.fit import load_source as reference_of

        try:
            loaded = reference_of(input_path)
        except CheckpointError as e:  # a local source not given again: quantize, and say it was not measured
            no_search = True
            click.echo(f"note: not measured against PyTorch ({e}); the tolerance was not checked", err=True)
    if no_search or report is not None or mode not in SEARCH_MODES:
        result = quantize(input_path, output, mode=mode, method=method, per_channel=per_channel, extra_float=extra)
    else:
        from .quantize.fit import quantize_to_tolerance
        from .tolerances import SIZE_BUDGET

        result, fitted = quantize_to_tolerance(input_path, output, mode=mode, method=method, per_channel=per_channel,
                                               loaded=loaded, size_budget=size_budget or SIZE_BUDGET, progress=_progress)
        if not as_json:
            click.echo(fitted.summary())
    if as_json and report is not None:
        click.echo(_json({"explain": report.to_dict(), "quantize": result.to_dict()}))
    else:
        _emit(result, as_json)


@main.command("verify", short_help="Check a built folder (or ONNX files) against PyTorch; exit 1 when a file fails.")
@click.argument("target", nargs=-1, required=True)
@click.option("--arch", default=None, help="With ONNX files: the architecture of the reference.")
@click.option("--checkpoint", default=None,
              help="The reference checkpoint: with ONNX files; with a FOLDER built from a local checkpoint, that folder "
                   "(its weights must have the sha256 the folder recorded).")
@_revision_option
@click.option("--random-init", is_flag=True, help="With ONNX files and --arch: seeded random weights for the reference.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-init.")
@click.option("--audio", multiple=True, type=click.Path(), help="Extra audio (files or folders; any rate/channels), repeatable.")
@click.option("--runtime", default="python", show_default=True,
              help="Comma-separated: python (onnxruntime), node / browser / webgpu (Transformers.js; FOLDER only).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_cmd(target, arch, checkpoint, random_init, seed, audio, runtime, as_json):
    """Check a built FOLDER (or ONNX files) against PyTorch. Exit 1 when a file fails."""
    from .files import recover_interrupted
    from .validate import check_audio_files
    from .verify.check import folder_files, read_source, verify, verify_folder

    if len(target) == 1:
        recover_interrupted(target[0])
    if len(target) == 1 and os.path.isdir(target[0]):
        folder = target[0]
        read_source(folder), folder_files(folder)  # a folder made by `voxport build`
        _check_runtimes(runtime)
        check_audio_files(audio)
        if checkpoint:
            from .archs.source import check_checkpoint

            check_checkpoint(checkpoint)
        if not as_json:
            _progress("rebuilding the PyTorch reference from the folder's source record")
        loaded = _load_folder_source(folder, checkpoint)
        report = verify_folder(folder, audio=list(audio), runtime=runtime, loaded=loaded, progress=None if as_json else _progress)
    else:
        missing = [t for t in target if not os.path.isfile(t)]
        if missing:
            raise VoxportError(f"not found: {missing[0]}; pass a folder made by `voxport build` or .onnx files")
        for t in target:
            _check_onnx_file(t)
        if runtime != "python":
            raise VoxportError("the Transformers.js runtimes load a folder; pass a folder made by `voxport build`")
        if not arch:
            raise VoxportError("with ONNX files, pass --arch and --checkpoint (or --random-init) for the reference")
        _check_source(checkpoint, random_init)
        check_audio_files(audio)
        from .archs import get_arch
        from .archs.source import check_checkpoint

        if checkpoint:
            check_checkpoint(checkpoint)
        loaded = get_arch(arch).load(checkpoint=checkpoint, random_init=random_init, seed=seed, revision=_revision())
        report = verify({os.path.basename(t): t for t in target}, loaded, audio=list(audio), runtime=runtime,
                        progress=None if as_json else _progress)
    _emit(report, as_json)
    sys.exit(0 if report.passed else 1)


@main.command("build", short_help="All stages: export, simplify, quantize, verify, package.")
@_source_options
@click.option("--output-dir", "-o", default=None, help="Folder to write [default: artifacts/<arch>-onnx].")
@click.option("--opset", type=click.Choice(["17", "18"]), default="18", show_default=True)
@click.option("--quantize", "modes", default="q8", show_default=True,
              help="Comma-separated dtypes to build besides fp32: q8,fp16,int8,uint8,q4,q4f16.")
@click.option("--q8-method", default=None, type=click.Choice(Q8_METHODS),
              help="How the q8 file is made [default: the architecture's recipe, measured: e.g. ECAPA tries dynamic-s8 and "
                   "falls back to weight-only].")
@click.option("--q8-target", type=float, default=None,
              help="A stricter max |dp| for q8 than its tolerance; the search keeps more nodes float to meet it.")
@click.option("--size-budget", type=float, default=None,
              help="How large the keep-float search may make a quantized file, as a multiple of its fully quantized size [default: 1.25].")
@click.option("--no-search", is_flag=True, help="Quantize every node the method covers; a file missing its tolerance fails the build.")
@click.option("--audio", multiple=True, type=click.Path(), help="Your audio for verify and the keep-float search: files or folders, repeatable.")
@click.option("--runtime", default="python", show_default=True,
              help="Where to verify, comma-separated: python, node, browser, webgpu.")
@click.option("--embeddings", is_flag=True, help="Also output embeddings, verified by cosine: ecapa the 192-d vector before the last layer, "
                   "wav2vec2 (classifier or CTC) the encoder's frames (last_hidden_state).")
@click.option("--normalized-embeddings", is_flag=True,
              help="speechbrain: `embeddings` after mean_var_norm_emb (encode_batch(wavs, normalize=True)); default: the "
                   "vector encode_batch(wavs) returns, which verify_batch scores.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def build_cmd(arch, checkpoint, random_init, seed, output_dir, opset, modes, q8_method, q8_target, size_budget, no_search, audio,
              runtime, embeddings, normalized_embeddings, force, as_json):
    """All stages: export, simplify, quantize, verify, package."""
    from .build import BuildFailed, build

    _check_source(checkpoint, random_init)
    load_options = {"revision": _revision()} if _revision() else {}
    if embeddings:
        from .archs import get_arch

        if not get_arch(arch).adds_embeddings:
            raise VoxportError(f"--embeddings: {arch} has no embedding output to add (its folders have what they have); drop the flag")
        load_options["embeddings"] = True
    if normalized_embeddings:
        from .archs import get_arch

        if not get_arch(arch).normalizes_embeddings:
            raise VoxportError(f"--normalized-embeddings: {arch} has no embedding normalisation step; drop the flag")
        load_options["normalize_embeddings"] = True
    output_dir = output_dir or os.path.join("artifacts", f"{arch}-onnx")
    try:
        result = build(arch, output_dir, checkpoint=checkpoint, random_init=random_init, seed=seed, opset=int(opset),
                       quantize_modes=tuple(m.strip() for m in modes.split(",") if m.strip()), q8_method=q8_method,
                       q8_target=q8_target, audio=list(audio), force=force, progress=_progress, search=not no_search,
                       **({"size_budget": size_budget} if size_budget else {}),
                       load_options=load_options or None,
                       runtimes=tuple(r.strip() for r in runtime.split(",") if r.strip()))
    except BuildFailed as e:
        _emit(e.result.verify, as_json)
        raise
    _emit(result, as_json)


@main.command("bench", short_help="Latency of PyTorch and every ONNX file, interleaved, with the CPU named.")
@click.argument("target", nargs=-1, required=True)
@click.option("--threads", type=int, default=2, show_default=True, help="onnxruntime and PyTorch threads (intra-op).")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs of each candidate per window.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed rounds before the timed ones.")
@click.option("--seconds", default="0.75,3", show_default=True, help="Input lengths in seconds, comma-separated.")
@click.option("--against", multiple=True, type=click.Path(),
              help="Another export to time side by side: a folder (its onnx/*.onnx, else *.onnx) or one .onnx file; repeatable.")
@click.option("--runtime", default="python", show_default=True,
              help="Comma-separated: python (PyTorch + onnxruntime), node, browser, webgpu (Transformers.js; FOLDER only).")
@click.option("--checkpoint", default=None,
              help="For a FOLDER built from a local checkpoint: that folder (PyTorch row); with ONNX files: the reference.")
@click.option("--arch", default=None, help="With ONNX files: the architecture of the PyTorch row (with --checkpoint or --random-init).")
@click.option("--random-init", is_flag=True, help="With ONNX files and --arch: seeded random weights for the PyTorch row.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-init.")
@_revision_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def bench_cmd(target, threads, runs, warmup, seconds, against, runtime, checkpoint, arch, random_init, seed, as_json):
    """Latency of PyTorch eager, every ONNX file of a FOLDER (or the ONNX files given) and of --against exports:
    interleaved runs in one process, medians, p95 and ratios, with the CPU and its ISA flags."""
    from .bench import against_files, bench, quiet_thread_pools

    quiet_thread_pools()  # before anything imports torch
    from .files import recover_interrupted
    from .verify.check import folder_files

    try:
        secs = tuple(float(s) for s in seconds.split(","))
    except ValueError:
        raise VoxportError(f"--seconds must be numbers separated by commas, got '{seconds}'") from None
    if threads < 1 or runs < 1 or warmup < 0 or not all(0 < x <= 600 for x in secs):
        raise VoxportError("--threads and --runs must be at least 1, --warmup at least 0, and --seconds between 0 and 600")
    runtimes = [r.strip() for r in runtime.split(",") if r.strip()]
    folder, files, loaded = None, None, None
    if len(target) == 1 and not target[0].endswith(".onnx"):
        folder = target[0]
        recover_interrupted(folder)
        if not os.path.isdir(folder):
            raise VoxportError(f"folder not found: {folder}; pass a folder made by `voxport build` or .onnx files")
        if arch or random_init:
            raise VoxportError("--arch and --random-init go with ONNX files; a folder records its own source")
        folder_files(folder)
    else:
        for t in target:
            if os.path.isdir(t) or not t.endswith(".onnx"):
                raise VoxportError(f"{t}: pass one folder made by `voxport build`, or .onnx files")
            _check_onnx_file(t)
        if any(r != "python" for r in runtimes):
            raise VoxportError("the Transformers.js runtimes load a folder; pass a folder made by `voxport build`")
        files = {}
        for t in target:
            name = os.path.basename(t)
            if name in files:
                raise VoxportError(f"two files named {name}; bench names each file by its file name")
            files[name] = t
        if (checkpoint or random_init) and not arch:
            raise VoxportError("with ONNX files, the PyTorch row needs --arch too (and --checkpoint or --random-init)")
        if arch:
            _check_source(checkpoint, random_init)
    for a in against:
        for p in against_files(a).values():
            _check_onnx_file(p)
    runtimes = _check_runtimes(runtime)
    if folder:
        loaded = _load_folder_source(folder, checkpoint)
    elif arch:
        from .archs import get_arch
        from .archs.source import check_checkpoint

        if checkpoint:
            check_checkpoint(checkpoint)
        loaded = get_arch(arch).load(checkpoint=checkpoint, random_init=random_init, seed=seed, revision=_revision())
    _emit(bench(folder, seconds=secs, threads=threads, runs=runs, warmup=warmup, runtimes=tuple(runtimes), loaded=loaded,
                files=files, against=tuple(against), progress=None if as_json else _progress), as_json)


# --- run and evaluate: a built folder on audio files (onnxruntime only for run; PyTorch is never imported there) ---


def _infer_options(f):
    """Options shared by run and evaluate: batching, classifier windows, CTC chunks."""
    opts = [
        click.option("--batch-size", type=int, default=8, show_default=True,
                     help="Files per mini-batch; segments of equal length share one onnxruntime call."),
        click.option("--threads", type=int, default=0, help="onnxruntime threads per session [default: all cores; ray: 1]."),
        click.option("--top-k", type=int, default=5, show_default=True, help="Labels kept per clip (classifiers)."),
        click.option("--window-s", type=float, default=None, help="Classifiers: rolling windows of this length (s)."),
        click.option("--hop-s", type=float, default=None, help="Classifiers: hop between windows (s) [default: the window]."),
        click.option("--ema", type=float, default=None,
                     help="Classifiers: smooth window probabilities with this EMA weight; the decision is the last "
                          "smoothed value (without --ema: the mean of the windows)."),
        click.option("--chunk-length-s", type=float, default=None, help="CTC: cut long audio into chunks (s), as transformers' pipeline."),
        click.option("--stride-length-s", type=float, default=None, help="CTC: stride on each side of a chunk (s) [default: chunk / 6]."),
        click.option("--skip-special-tokens", is_flag=True,
                     help="CTC: drop the tokens tokenizer.json marks special before merging repeats, as Transformers.js decodes "
                          "(default: every token kept, as transformers' pipeline)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _make_options(batch_size, top_k, window_s, hop_s, ema, chunk_length_s, stride_length_s, skip_special_tokens, timestamps=None):
    from .infer.predict import Options

    return Options(batch_size=batch_size, top_k=top_k, window_s=window_s, hop_s=hop_s, ema=ema, chunk_length_s=chunk_length_s,
                   stride_length_s=stride_length_s, timestamps=timestamps, skip_special_tokens=skip_special_tokens)


@main.command("run", short_help="Run a folder's ONNX file on audio files or folders (onnxruntime only).")
@click.argument("folder", type=click.Path())
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--dtype", default=None, help="Which file: fp32, q8, fp16, int8, uint8, q4, q4f16 (Transformers.js names) [default: fp32].")
@_infer_options
@click.option("--timestamps", type=click.Choice(["word"]), default=None, help="CTC: word offsets in seconds.")
@click.option("--npy-dir", type=click.Path(file_okay=False), default=None,
              help="Write array outputs (embeddings) as .npy files here instead of JSON lists.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: {\"results\": [...]}.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: path,status,error,duration_s,label,score (or text).")
def run_cmd(folder, paths, dtype, batch_size, threads, top_k, window_s, hop_s, ema, chunk_length_s, stride_length_s,
            skip_special_tokens, timestamps, npy_dir, as_json, as_csv):
    """Run FOLDER's ONNX file on audio files or folders (onnxruntime only). Exit 1 when a file fails."""
    import json as _json_mod

    from .infer.run import run

    if as_json and as_csv:
        raise VoxportError("pass one of --json and --csv")
    if threads < 0 or top_k < 1:
        raise VoxportError("--threads must be 0 or more and --top-k at least 1")
    options = _make_options(batch_size, top_k, window_s, hop_s, ema, chunk_length_s, stride_length_s, skip_special_tokens, timestamps)
    report = run(folder, list(paths), dtype=dtype, options=options, threads=threads, npy_dir=npy_dir, progress=True)
    if as_json:
        click.echo(_json_mod.dumps(_json_safe(report.to_dict()), indent=2, ensure_ascii=False, allow_nan=False))
    elif as_csv:
        click.echo(report.to_csv(), nl=False)
    else:
        click.echo(report.to_table())
    sys.exit(1 if report.failed else 0)


@main.command("evaluate", short_help="Accuracy / F1 (or WER / CER) of PyTorch and each ONNX file on labelled audio.")
@click.argument("folder", type=click.Path())
@click.option("--labels", "labels_csv", required=True, type=click.Path(),
              help="CSV with a header: path,label (classifiers) or path,text (CTC); paths relative to the CSV.")
@click.option("--dtype", default="all", show_default=True, help="ONNX files to evaluate: all, or comma-separated dtypes.")
@click.option("--checkpoint", default=None, help="The PyTorch checkpoint, when the folder's source record cannot be rebuilt alone.")
@click.option("--no-pytorch", is_flag=True, help="Skip the PyTorch reference (drops are then measured against fp32).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: Ray Data (pip install 'voxport[ray]'); local Ray, or a cluster via RAY_ADDRESS.")
@click.option("--workers", type=int, default=None, help="ray: actors [default: CPUs / threads].")
@_infer_options
@click.option("--no-normalize-text", is_flag=True, help="CTC: compare texts as they are (default: lower case, no punctuation).")
@click.option("--max-drop", type=float, default=None,
              help="Exit 1 when a file loses more than this many accuracy points (gains this many WER points) against PyTorch (or fp32).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), default=None, help="Write PNG charts here.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: {\"rows\": [...], \"files\": [...]}.")
def evaluate_cmd(folder, labels_csv, dtype, checkpoint, no_pytorch, engine, workers, batch_size, threads, top_k, window_s, hop_s, ema,
                 chunk_length_s, stride_length_s, skip_special_tokens, no_normalize_text, max_drop, plots_dir, as_json):
    """Accuracy / F1 / confusion (or WER / CER) of PyTorch and each ONNX file on labelled audio. Exit 1 on --max-drop or failed files."""
    import json as _json_mod

    from .evaluate import evaluate

    if threads < 0 or (workers is not None and workers < 1) or (max_drop is not None and max_drop < 0):
        raise VoxportError("--threads must be 0 or more, --workers at least 1 and --max-drop not negative")
    if plots_dir:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise VoxportError("--plots needs matplotlib: pip install 'voxport[plots]'") from None
    options = _make_options(batch_size, top_k, window_s, hop_s, ema, chunk_length_s, stride_length_s, skip_special_tokens)
    report = evaluate(folder, labels_csv, dtypes=dtype, options=options, engine=engine, checkpoint=checkpoint,
                      pytorch=not no_pytorch, threads=threads, workers=workers, max_drop=max_drop,
                      normalize_text=not no_normalize_text, progress=True)
    if plots_dir:
        from .evaluate.plots import write_plots

        written = write_plots(report, plots_dir)
        report.notes.append(f"plots: {', '.join(written)}")
    click.echo(_json_mod.dumps(_json_safe(report.to_dict()), indent=2, ensure_ascii=False, allow_nan=False) if as_json else report.to_table())
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
