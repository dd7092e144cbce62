// node pipelines-node.mjs JOB.json -> the voxport-web pipelines on a folder, result JSON on stdout.
// job: { folder, dtype, threads, runs: [{ kind: "longform" | "stream" | "windows" | "verify", audio: path.f32 (float32
// little endian at `sr`), sr, b: path.f32 (verify), options, frame (stream: samples per push) }] }
import fs from "node:fs";
import path from "node:path";
import { env } from "@huggingface/transformers";
import { LongFormCTC, SpeakerVerifier, StreamingCTC, WindowedClassifier } from "./voxport-web/src/index.js";

const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(job.folder) + path.sep;
env.useFSCache = false;
const model = path.basename(job.folder);
const options = { dtype: job.dtype ?? "fp32" };
if (job.threads) options.session_options = { intraOpNumThreads: job.threads, interOpNumThreads: 1 };
const read = (p) => {
  const buf = fs.readFileSync(p);
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
};
const out = [];
const loaded = {};
const get = async (Cls) => (loaded[Cls.name] ??= await Cls.from_pretrained(model, options));
for (const run of job.runs) {
  const audio = read(run.audio);
  const t0 = performance.now();
  if (run.kind === "longform") {
    out.push({ ...(await (await get(LongFormCTC))(audio, run.options)), ms: performance.now() - t0 });
  } else if (run.kind === "stream") {
    const live = await StreamingCTC.from_pretrained(model, { ...options, ...run.options });
    const partials = [];
    const finals = [];
    live.addEventListener("partial", (e) => partials.push({ at_s: live.received / live.asr.sampling_rate, text: e.detail.text }));
    live.addEventListener("final", (e) => finals.push({ at_s: live.received / live.asr.sampling_rate, words: e.detail.words }));
    const frame = run.frame ?? 128;
    for (let i = 0; i < audio.length; i += frame) await live.push(audio.subarray(i, i + frame), run.sr);
    const result = await live.end();
    out.push({ ...result, partials, finals, peak_buffer: live.buf.length, ms: performance.now() - t0 });
  } else if (run.kind === "windows") {
    const res = await (await get(WindowedClassifier))(audio, run.options);
    out.push({ ...res, ms: performance.now() - t0 });
  } else if (run.kind === "verify") {
    const res = await (await get(SpeakerVerifier))(audio, read(run.b));
    out.push({ score: res.score, embeddings: res.embeddings.map((e) => Array.from(e)), ms: performance.now() - t0 });
  } else {
    throw new Error(`unknown run kind ${run.kind}`);
  }
}
process.stdout.write(JSON.stringify({ node: process.version, results: out }));
