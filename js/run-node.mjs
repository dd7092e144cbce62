// node run-node.mjs JOB.json -> prints the result JSON on stdout
import fs from "node:fs";
import path from "node:path";
import * as transformers from "@huggingface/transformers";
import { runJob } from "./job.mjs";

const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { env } = transformers;
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(job.model) + path.sep;
env.useFSCache = false;
if (job.threads) job.session_options = { intraOpNumThreads: job.threads, interOpNumThreads: 1 };
const model = path.basename(job.model);
const readRow = async (p) => {
  const buf = fs.readFileSync(p);
  return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
};
const results = await runJob(transformers, { ...job, model }, readRow);
const info = { runtime: "node", node: process.version, transformers: transformers.env.version, threads: job.threads ?? null };
process.stdout.write(JSON.stringify({ info, results }));
