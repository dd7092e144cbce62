// node run-outputs-node.mjs JOB.json -> prints the result JSON on stdout
// The way an embedding model is used in Transformers.js: AutoFeatureExtractor + AutoModel, every graph output by name.
// job: { model, dtypes, rows: [path of float32 samples], threads }
// result: { info, results: { dtype: { load_ms, error, rows: [{ output: { dims, data } }] } } }
import fs from "node:fs";
import path from "node:path";
import * as transformers from "@huggingface/transformers";

const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { env, AutoFeatureExtractor, AutoModel } = transformers;
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(job.model) + path.sep;
env.useFSCache = false;
const name = path.basename(job.model);
const options = job.threads ? { session_options: { intraOpNumThreads: job.threads, interOpNumThreads: 1 } } : {};

const results = {};
for (const dtype of job.dtypes) {
  const entry = { load_ms: null, error: null, rows: [] };
  results[dtype] = entry;
  try {
    const t0 = performance.now();
    const extractor = await AutoFeatureExtractor.from_pretrained(name);
    const model = await AutoModel.from_pretrained(name, { dtype, ...options });
    entry.load_ms = performance.now() - t0;
    for (const row of job.rows) {
      const buf = fs.readFileSync(row);
      const audio = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
      const out = await model(await extractor(audio));
      const named = {};
      for (const [key, t] of Object.entries(out)) {
        if (t && t.dims && t.data) named[key] = { dims: t.dims, data: Array.from(t.data) };
      }
      entry.rows.push(named);
    }
    await model.dispose?.();
  } catch (e) {
    entry.error = String(e && e.message ? e.message : e).split("\n")[0];
  }
}
process.stdout.write(JSON.stringify({ info: { runtime: "node", node: process.version, transformers: env.version }, results }));
