"""voxport bench: interleaved rounds, ratios of medians, --against other exports, CPU flags, strict JSON.

No assertion is about speed: only about what is timed, in which order, and how the figures are derived."""
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from voxport.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def strict_json(text):
    def refuse(c):
        raise AssertionError(f"not strict JSON: {c}")

    return json.loads(text, parse_constant=refuse)


def audio_graph(path, audio="input_values", mask=None, extra=None):
    """A tiny ONNX graph over raw audio (mean of the samples), with the input names of another exporter."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(audio, TensorProto.FLOAT, ["batch", "samples"])]
    nodes = [helper.make_node("ReduceMean", [audio], ["m"], keepdims=1)]
    if mask:
        inputs.append(helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "samples"]))
        nodes += [helper.make_node("Cast", [mask], ["mf"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMean", ["mf"], ["mm"], keepdims=1),
                  helper.make_node("Mul", ["m", "mm"], ["logits"])]
    else:
        nodes.append(helper.make_node("Identity", ["m"], ["logits"]))
    if extra:
        inputs.append(helper.make_tensor_value_info(extra, TensorProto.INT64, ["batch"]))
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(m, path)
    return path


def test_interleaved_runs_round_robin_after_warmup():
    from voxport.bench import interleaved

    order = []
    fns = [lambda k=k: order.append(k) for k in "ABC"]
    times = interleaved(fns, runs=3, warmup=2)
    assert order == list("ABC") * 5  # 2 warm-up rounds, then 3 timed rounds, one run of each in turn
    assert [len(t) for t in times] == [3, 3, 3]


def test_ratios_are_medians_divided():
    from voxport.bench import compute_ratios
    from voxport.results import BenchRow

    def row(name, runtime, ms, source=""):
        return BenchRow(name, runtime, 1, 0.75, ms, ms, 5, source=source)

    rows = [row("pytorch eager", "pytorch", 40.0), row("model.onnx", "onnxruntime", 20.0),
            row("model_quantized.onnx", "onnxruntime", 14.0), row("model_uint8.onnx", "onnxruntime", 12.0),
            row("opt/model.onnx", "onnxruntime", 25.0, "opt"), row("opt/model_quantized.onnx", "onnxruntime", 10.0, "opt"),
            row("model.onnx", "tjs node", 30.0), row("model_quantized.onnx", "tjs node", 45.0)]
    against = [{"label": "opt", "files": {"model.onnx": "x", "model_quantized.onnx": "y"}}]
    got = {(r["kind"], r["name"], r["runtime"]): (r["baseline"], r["ratio"]) for r in compute_ratios(rows, "model.onnx", against)}
    assert got[("fp32", "model_quantized.onnx", "onnxruntime")] == ("model.onnx", pytest.approx(0.7))
    assert got[("fp32", "model_quantized.onnx", "tjs node")] == ("model.onnx", pytest.approx(1.5))  # its own runtime's fp32
    assert got[("fp32", "opt/model_quantized.onnx", "onnxruntime")] == ("opt/model.onnx", pytest.approx(0.4))
    assert got[("pytorch", "model.onnx", "onnxruntime")] == ("pytorch eager", pytest.approx(0.5))
    assert got[("pytorch", "opt/model.onnx", "onnxruntime")] == ("pytorch eager", pytest.approx(25 / 40))
    # the other export's file of the same name, else its fp32
    assert got[("against", "model.onnx", "onnxruntime")] == ("opt/model.onnx", pytest.approx(0.8))
    assert got[("against", "model_quantized.onnx", "onnxruntime")] == ("opt/model_quantized.onnx", pytest.approx(1.4))
    assert got[("against", "model_uint8.onnx", "onnxruntime")] == ("opt/model.onnx", pytest.approx(12 / 25))
    assert ("fp32", "model.onnx", "onnxruntime") not in got and ("against", "model.onnx", "tjs node") not in got


def test_cpu_info_names_the_isa_flags():
    from voxport.bench import ISA_FLAGS, cpu_info

    c = cpu_info()
    assert c["model"] and c["cores"] >= 1
    assert set(c["flags"]) in ({*ISA_FLAGS["x86"]}, {*ISA_FLAGS["arm"]})
    assert isinstance(c["int8_dot_product"], bool)


def test_bench_folder_against_a_folder_and_a_file(ecapa_folder, ecapa_ckpt, tmp_path):
    other = tmp_path / "other-export"
    shutil.copytree(os.path.join(ecapa_folder, "onnx"), other / "onnx")  # an export with the same file names
    single = audio_graph(str(tmp_path / "optimum" / "model.onnx"), audio="input_values", mask="attention_mask")
    r = run("bench", ecapa_folder, "--checkpoint", ecapa_ckpt, "--runs", "3", "--warmup", "1", "--seconds", "0.5",
            "--threads", "1", "--against", other, "--against", single, "--json")
    assert r.exit_code == 0, r.output + r.stderr
    d = strict_json(r.stdout)
    names = [x["name"] for x in d["rows"]]
    assert names == ["pytorch eager", "model.onnx", "model_quantized.onnx", "other-export/model.onnx",
                     "other-export/model_quantized.onnx", "optimum/model.onnx"]
    assert {x["source"] for x in d["rows"]} == {"", "other-export", "optimum"}
    assert all(x["runs"] == 3 and x["median_ms"] > 0 and x["p95_ms"] >= x["median_ms"] for x in d["rows"])
    assert d["threads"] == 1 and d["runs"] == 3 and d["warmup"] == 1 and d["interleaved"] is True
    assert d["cpu"] and ("avx512_vnni" in d["cpu_flags"] or "asimddp" in d["cpu_flags"])
    assert isinstance(d["int8_dot_product"], bool) and d["versions"]["onnxruntime"] and d["versions"]["torch"]
    assert [a["label"] for a in d["against"]] == ["other-export", "optimum"]
    median = {x["name"]: x["median_ms"] for x in d["rows"]}
    ratios = {(x["kind"], x["name"], x.get("against")): x for x in d["ratios"]}
    for (kind, name, against), x in ratios.items():
        assert x["ratio"] == pytest.approx(median[name] / median[x["baseline"]])
    assert ratios[("fp32", "model_quantized.onnx", None)]["baseline"] == "model.onnx"
    assert ratios[("pytorch", "model.onnx", None)]["baseline"] == "pytorch eager"
    assert ratios[("against", "model_quantized.onnx", "other-export")]["baseline"] == "other-export/model_quantized.onnx"
    assert ratios[("against", "model.onnx", "optimum")]["baseline"] == "optimum/model.onnx"
    assert ratios[("against", "model_quantized.onnx", "optimum")]["baseline"] == "optimum/model.onnx"  # no q8 there: its fp32
    # the table shows the same, with the CPU and its flags in the header
    r = run("bench", ecapa_folder, "--checkpoint", ecapa_ckpt, "--runs", "1", "--warmup", "0", "--seconds", "0.5",
            "--threads", "1", "--against", single)
    assert r.exit_code == 0, r.output + r.stderr
    head = r.stdout.splitlines()
    assert head[1].startswith("cpu: ") and "int8 dot products:" in head[1] and "onnxruntime" in head[0]
    assert "x optimum" in r.stdout and "optimum/model.onnx" in r.stdout


def test_bench_onnx_files_and_foreign_inputs(tmp_path):
    a = audio_graph(str(tmp_path / "a" / "model.onnx"), audio="audio")
    b = audio_graph(str(tmp_path / "b" / "fast.onnx"), audio="wave", mask="padding_mask")
    r = run("bench", a, b, "--runs", "2", "--seconds", "0.1", "--threads", "1", "--json")
    assert r.exit_code == 0, r.output + r.stderr
    d = strict_json(r.stdout)
    assert [x["name"] for x in d["rows"]] == ["model.onnx", "fast.onnx"]  # no PyTorch row without --arch
    assert d["fp32"] == "model.onnx"
    (x,) = [x for x in d["ratios"] if x["kind"] == "fp32"]
    assert x["name"] == "fast.onnx" and x["ratio"] == pytest.approx(d["rows"][1]["median_ms"] / d["rows"][0]["median_ms"])
    # an input bench cannot make up: one line, exit 2, before anything is timed
    c = audio_graph(str(tmp_path / "c" / "model.onnx"), extra="speaker_ids")
    r = run("bench", a, "--against", c, "--runs", "1", "--seconds", "0.1")
    assert r.exit_code == 2 and "needs input 'speaker_ids'" in r.stderr and "Traceback" not in r.stderr
    r = run("bench", a, "--against", tmp_path / "nothing-here")
    assert r.exit_code == 2 and "--against" in r.stderr and "not found" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run("bench", a, "--against", tmp_path / "empty")
    assert r.exit_code == 2 and "no .onnx files" in r.stderr
    r = run("bench", a, "--runtime", "node")
    assert r.exit_code == 2 and "load a folder" in r.stderr


def test_build_records_wall_time_and_peak_rss(ecapa_folder):
    with open(os.path.join(ecapa_folder, "voxport.json")) as f:
        rec = json.load(f)["build"]
    assert rec["wall_s"] > 0 and rec["peak_rss_mb"] > 100 and rec["peak_rss_children_mb"] >= 0
    assert rec["cpu"] and rec["cpu_cores"] >= 1
    assert np.isfinite(rec["wall_s"])


@pytest.mark.js
def test_bench_transformers_js_rows_beside_the_interleaved_ones(ecapa_folder, ecapa_ckpt):
    """Node rows are timed in their own process; their x fp32 is against Node's own fp32."""
    from voxport.errors import VoxportError
    from voxport.verify.runtimes import get_runtime

    try:
        get_runtime("node").check()
    except VoxportError as e:
        pytest.skip(str(e))
    r = run("bench", ecapa_folder, "--checkpoint", ecapa_ckpt, "--runtime", "python,node", "--runs", "2", "--warmup", "0",
            "--seconds", "0.5", "--threads", "1", "--json")
    assert r.exit_code == 0, r.output + r.stderr
    d = strict_json(r.stdout)
    node = [x for x in d["rows"] if x["runtime"].startswith("tjs node")]
    assert {x["name"] for x in node} == {"model.onnx", "model_quantized.onnx"}
    (q8,) = [x for x in d["ratios"] if x["kind"] == "fp32" and x["runtime"] == node[0]["runtime"]]
    median = {x["name"]: x["median_ms"] for x in node}
    assert q8["baseline"] == "model.onnx" and q8["ratio"] == pytest.approx(median["model_quantized.onnx"] / median["model.onnx"])
    assert {x["name"] for x in d["rows"] if x["runtime"] == "onnxruntime"} == {"model.onnx", "model_quantized.onnx"}
