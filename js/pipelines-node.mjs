// node pipelines-node.mjs JOB.json -> the voxport-web pipelines on a folder (see pipelines.mjs), JSON on stdout.
import fs from "node:fs";
import path from "node:path";
import { env } from "@huggingface/transformers";
import * as web from "./voxport-web/src/index.js";
import { runPipelines } from "./pipelines.mjs";

const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(job.model) + path.sep;
env.useFSCache = false;
const read = async (p) => {
  const buf = fs.readFileSync(p);
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
};
const sessionOptions = job.threads ? { intraOpNumThreads: job.threads, interOpNumThreads: 1 } : null;
const results = await runPipelines(web, { ...job, model: path.basename(job.model) }, read, sessionOptions);
process.stdout.write(JSON.stringify({ info: { runtime: "node", node: process.version, version: web.VERSION }, results }));
