"""Package stage: the Transformers.js folder (config, preprocessor, card, voxport.json) around the verified files."""
from __future__ import annotations

import os

from .files import DTYPE_FILES, SOURCE_FILE, write_json
from .errors import PackageError


def write_folder(folder: str, spec, loaded, verify_report, files: dict, export_result, quantize_results: list,
                 skipped: dict | None = None, name: str | None = None) -> None:
    """config.json, preprocessor_config.json, extra files, source record and model card into `folder`.
    name: the folder's published name (the card's usage shows it); default: the base name of `folder`."""
    from . import __version__

    if not os.path.isdir(os.path.join(folder, "onnx")):
        raise PackageError(f"{folder}/onnx is missing")
    published = name or os.path.basename(os.path.abspath(folder))
    config = spec.hf_config(loaded)
    onnx_dir = os.path.join(folder, "onnx")
    external = {n[: -len("_data")]: 1 for n in sorted(os.listdir(onnx_dir)) if n.endswith(".onnx_data")}
    if external:  # weights beside the graph (files over 2 GB): Transformers.js must fetch model.onnx_data too
        config.setdefault("transformers.js_config", {})["use_external_data_format"] = external
    write_json(os.path.join(folder, "config.json"), config)
    write_json(os.path.join(folder, "preprocessor_config.json"), spec.preprocessor_config(loaded))
    for name, data in spec.extra_files(loaded).items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    write_json(os.path.join(folder, SOURCE_FILE), {
        "voxport_version": __version__,
        "source": loaded.source,
        "opset": export_result.opset,
        "route": export_result.route,
        "verify": verify_report.to_dict(),
    })
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(model_card(spec, loaded, verify_report, files, export_result, quantize_results, skipped or {},
                           name=published))


def _file_cell(r) -> str:
    if r is None:
        return "not run"
    parts = []
    if r.min_cosine is not None:
        parts.append(f"embeddings cosine ≥ {r.min_cosine:.6f}, pairwise \\|Δscore\\| {r.max_pair_delta:.1e}")
    if r.argmax_total:
        parts.append(f"max \\|Δlogit\\| {r.max_abs_logit:.1e}, max \\|Δp\\| {r.max_abs_prob:.1e}, argmax {r.argmax_agree}/{r.argmax_total}")
    return f"{r.status.value}: " + ", ".join(parts)


def _js_cell(r) -> str:
    if r is None:
        return "not run"
    x = r.extra
    if "max_dp_vs_onnxruntime_python" in x:
        return f"{r.status.value}: \\|Δp\\| vs ORT {x['max_dp_vs_onnxruntime_python']:.1e}, {x.get('median_ms', 0):.0f} ms"
    if "max_d_vs_onnxruntime_python" in x:
        return f"{r.status.value}: \\|Δ\\| vs ORT {x['max_d_vs_onnxruntime_python']:.1e}"
    if "transcripts_equal_ort" in x:
        return f"{r.status.value}: transcripts = ORT {x['transcripts_equal_ort']}, {x.get('median_ms', 0):.0f} ms"
    return r.status.value + (f": {r.reasons[0]}" if r.reasons else "")


def describe_origin(source: dict) -> str:
    """What the weights are, in words, from a source record (never a local path)."""
    if source.get("random_init"):
        return f"seeded random weights (seed {source.get('seed')}) made by voxport for demos and tests, not a trained model"
    if source.get("local"):
        return f"the local checkpoint folder `{source.get('checkpoint')}` (sha256 of each weight file in `voxport.json`)"
    rev = source.get("revision")
    return f"`{source.get('checkpoint')}`" + (f" at revision `{rev[:12]}`" if rev else "")


def verification_snippet(name: str, output: str, with_import: bool = True, frames: bool = False) -> list:
    """Speaker verification with AutoFeatureExtractor + AutoModel: the cosine of two clips' embeddings (frames: the
    output is [1, frames, dim], averaged over frames first)."""
    lines = ['import { AutoFeatureExtractor, AutoModel } from "@huggingface/transformers";', ""] if with_import else [
        "", "// speaker verification: embeddings of two clips, compared by cosine",
        'import { AutoFeatureExtractor, AutoModel } from "@huggingface/transformers";']
    return lines + [
        f'const extractor = await AutoFeatureExtractor.from_pretrained("{name}");',
        f'const model = await AutoModel.from_pretrained("{name}", {{ dtype: "q8" }}); // or "fp32"',
        f"const embed = async (audio) => (await model(await extractor(audio))).{output}"
        + (".mean(1).data; // frames averaged into one vector; audio: Float32Array, 16 kHz mono" if frames else
           ".data; // Float32Array, 16 kHz mono"),
        "const [a, b] = [await embed(clipA), await embed(clipB)];",
        "let dot = 0, na = 0, nb = 0;",
        "for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }",
        "const score = dot / Math.sqrt(na * nb); // cosine: higher = more likely the same speaker; pick the threshold on your data",
    ]


def _speech_suite() -> str:
    from .verify.speech import suite_id

    return suite_id()


WEB_SNIPPETS = {
    "longform": ["const asr = await LongFormCTC.from_pretrained(\"{name}\", {{ dtype: \"q8\" }});",
                 "const {{ text, chunks }} = await asr(audio, {{ chunk_length_s: 10, stride_length_s: 2, return_timestamps: \"word\" }});",
                 "const live = await StreamingCTC.from_pretrained(\"{name}\", {{ dtype: \"q8\", chunk_length_s: 5, stride_length_s: 1 }});",
                 "live.addEventListener(\"final\", (e) => show(e.detail.words));  // [{{ text, timestamp: [start_s, end_s] }}]",
                 "worklet.port.onmessage = (e) => live.push(e.data, audioContext.sampleRate);"],
    "windows": ["const rolling = await WindowedClassifier.from_pretrained(\"{name}\", {{ dtype: \"q8\" }});",
                "const {{ labels, windows }} = await rolling(audio, {{ window_s: 0.75, hop_s: 0.15, ema: 0.2 }});"],
    "verify": ["const verifier = await SpeakerVerifier.from_pretrained(\"{name}\", {{ dtype: \"q8\" }});",
               "const {{ score }} = await verifier(enrolment, attempt);  // cosine of the two embeddings"],
}
WEB_CLASSES = {"longform": "LongFormCTC, StreamingCTC", "windows": "WindowedClassifier", "verify": "SpeakerVerifier"}


def web_snippet(plan: list, name: str) -> list:
    """The card's lines for the deployed pipelines (voxport-web, js/voxport-web in voxport's repository)."""
    kinds = [k for k, _ in plan if k in WEB_SNIPPETS]
    if not kinds:
        return []
    lines = ["In the browser, long recordings, live microphones and rolling windows with voxport-web (the npm package in "
             "voxport's `js/voxport-web`; `voxport verify --runtime node,browser` checks these pipelines on a minute of "
             "speech):", "", "```js", f"import {{ {', '.join(WEB_CLASSES[k] for k in kinds)} }} from \"voxport-web\";", ""]
    for k in kinds:
        lines += [line.format(name=name) for line in WEB_SNIPPETS[k]]
    return lines + ["```", ""]


def model_card(spec, loaded, report, files: dict, export_result, quantize_results=(), skipped=None, name: str = "model-onnx") -> str:
    from . import __version__

    card = spec.card(loaded)
    task = card.get("pipeline_tag", "audio-classification")
    front = ["---", "library_name: transformers.js", f"pipeline_tag: {task}", f"license: {card.get('license', 'other')}"]
    if card.get("base_model"):
        front.append(f"base_model: {card['base_model']}")
    front += ["tags:", "- onnx", "- audio", "- voxport", "---", ""]
    src = loaded.source
    origin = describe_origin(src)
    lines = front + [
        f"# {card.get('title', spec.name)}", "",
        f"ONNX export of {origin}, made with voxport {__version__} "
        f"(opset {export_result.opset}, {export_result.route} exporter) and checked against the PyTorch model.", "",
        "## Usage (Transformers.js)", "", "```js",
    ]
    has_pipeline = task in ("audio-classification", "automatic-speech-recognition")
    if has_pipeline:
        lines += [
            'import { pipeline } from "@huggingface/transformers";',
            "",
            f"// \"{name}\": this folder, or \"<user>/{name}\" once uploaded to the Hub",
            f'const {"transcriber" if "speech" in task else "classifier"} = await pipeline("{task}", "{name}", {{ dtype: "q8" }}); // or "fp32"',
            f'const out = await {"transcriber" if "speech" in task else "classifier"}(audio); // Float32Array, 16 kHz mono'
            + (" -> { text }" if "speech" in task else ""),
        ]
        if card.get("example_label"):
            lines.append(f"// [{{ label: \"{card['example_label']}\", score: ... }}, ...]")
    if card.get("embeddings"):
        lines += verification_snippet(name, card["embeddings"], with_import=not has_pipeline,
                                      frames=spec.output_kinds(loaded).get(card["embeddings"]) == "frames")
    lines += ["```", ""]
    lines += web_snippet(spec.deployed(loaded), name)
    labels = card.get("labels")
    if labels:
        lines += ["Labels: " + ", ".join(f"{k} = {v}" for k, v in labels.items()), ""]
    for note in card.get("notes", []):
        lines.append(f"- {note}")
    runtimes = sorted({r.runtime for r in report.files} - {"python"})
    lines += ["", "## Files", "",
              "| dtype | file | size | verify (onnxruntime vs PyTorch) |" + "".join(f" {rt} |" for rt in runtimes),
              "|---|---|---|---|" + "---|" * len(runtimes)]
    js = {(r.file, r.runtime): r for r in report.files}
    by_file = {r.file: r for r in report.files if r.runtime == "python"}
    for dtype, name in DTYPE_FILES.items():
        if name in files:
            r = by_file.get(name)
            line = _file_cell(r)
            cols = "".join(f" {_js_cell(js.get((name, rt)))} |" for rt in runtimes)
            lines.append(f"| {dtype} | `onnx/{name}` | {files[name] / 1e6:.1f} MB | {line} |{cols}")
    methods = {os.path.basename(q.path): q.options.get("method", "") for q in quantize_results}
    if methods:
        lines += ["", "Quantized files: " + "; ".join(f"`{k}` {v}" for k, v in methods.items())
                  + " (options and reasons in `quantize_config.json`)."]
    for q in quantize_results:
        search = q.options.get("search")
        if search and not search["kept_float"]:
            lines.append(f"- `{os.path.basename(q.path)}`: {search['why']}.")
        elif search:
            kept = search["kept_float"]
            lines.append(f"- `{os.path.basename(q.path)}`: {search['why']}: "
                         + ", ".join(f"`{k['node']}` ({k['op_type']}, {k.get('kept', 'float weights')}, \\|Δp\\| "
                                     f"{k['max_abs_prob_alone']:.1e} alone)" for k in kept[:8])
                         + (f" and {len(kept) - 8} more" if len(kept) > 8 else "") + ". Float weights are stored as float16; "
                         "nodes with float activations keep int8 weights.")
    for mode, why in (skipped or {}).items():
        lines.append(f"- `{mode}` not built: {why}")
    lines += ["", "## Verification", "",
              f"Reference: {report.reference}. Suite: {len(report.cases)} cases ({', '.join(report.cases)})"
              + (f"; the speech clips are the ones voxport ships (suite {_speech_suite()}), so `voxport verify` judges this "
                 "folder on the same cases on any machine" if any(c.startswith("speech ") for c in report.cases) else "")
              + ".", ""]
    # files with logits (every file of a classifier; none of an embeddings-only folder)
    scored = [r for r in report.files if r.argmax_total or r.min_cosine is None]
    if scored:
        lines += ["| file | runtime | max \\|Δlogit\\| | mean \\|Δlogit\\| | max \\|Δp\\| | \\|Δp\\|>1e-2 | \\|Δp\\|>1e-1 | argmax agree | tolerance | status |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
    for r in scored:
        tol = r.tolerance
        t = ", ".join(x for x in [
            f"\\|Δlogit\\| ≤ {tol['max_abs_logit']:.0e}" if tol.get("max_abs_logit") is not None else "",
            f"\\|Δp\\| ≤ {tol['max_abs_prob']}" if tol.get("max_abs_prob") is not None else "",
            f"agree ≥ {tol['min_agreement']:.0%}"] if x)
        lines.append(f"| {r.file} | {r.runtime} | {r.max_abs_logit:.2e} | {r.mean_abs_logit:.2e} | {r.max_abs_prob:.2e} | "
                     f"{r.over_1e2} | {r.over_1e1} | {r.argmax_agree}/{r.argmax_total} | {t} | {r.status.value} |")
    emb = [r for r in report.files if r.min_cosine is not None]
    if emb:
        lines += ["", "Embeddings (every row of every case; pairwise = the cosine score between two rows' embeddings):", "",
                  "| file | runtime | rows | min cosine | max \\|Δ\\| | max \\|Δ pairwise score\\| | tolerance | status |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in emb:
            tol = r.tolerance
            lines.append(f"| {r.file} | {r.runtime} | {r.embedding_rows} | {r.min_cosine:.7f} | {r.max_abs_embedding:.2e} | "
                         f"{r.max_pair_delta:.2e} | cosine ≥ {tol.get('min_cosine')}, \\|Δscore\\| ≤ {tol.get('max_pair_delta')} | "
                         f"{r.status.value} |")
        lines.append("")
    for r in report.files:
        if r.extra:
            lines.append(f"- `{r.file}` ({r.runtime}): " + ", ".join(f"{k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                                                                     for k, v in r.extra.items()))
    lines += ["", "Re-run the check with `voxport verify <folder>` (add `--audio file.wav` for your own clips).", ""]
    return "\n".join(lines)
