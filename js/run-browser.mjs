// node run-browser.mjs JOB.json [chromium path] -> serves the job on 127.0.0.1 with cross-origin isolation,
// runs it in headless Chromium through playwright-core, prints the result JSON on stdout.
import fs from "node:fs";
import path from "node:path";
import { here, runPage, serve } from "./browser.mjs";

const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const executablePath = process.argv[3] || "/usr/bin/chromium";
const jobDir = path.dirname(path.resolve(process.argv[2]));
// job.page: "page.html" (one forward pass per row, job.mjs) or "pipelines.html" (voxport-web's pipelines, pipelines.mjs)
const page = job.page || "page.html";
const files = Object.fromEntries(["page.html", "job.mjs", "pipelines.html", "pipelines.mjs", "env.mjs"].map((f) => [`/${f}`, path.join(here, f)]));
const server = await serve(files, {
  "/model/m/": job.model,
  "/dist/": path.join(here, "node_modules/@huggingface/transformers/dist"),
  "/ort/": path.join(here, "node_modules/onnxruntime-web/dist"),
  "/web/": path.join(here, "voxport-web"),
  "/job/": jobDir,
});

// audio is served from the job folder
const url = (p) => `/job/${path.relative(jobDir, p)}`;
if (job.cases) job.cases = job.cases.map((c) => ({ ...c, rows: c.rows.map(url) }));
if (job.runs) job.runs = job.runs.map((r) => ({ ...r, audio: url(r.audio), ...(r.b ? { b: url(r.b) } : {}) }));
fs.writeFileSync(path.join(jobDir, "job.json"), JSON.stringify(job));

const extraArgs = [];
const dropArgs = [];
if (job.device === "webgpu") {
  dropArgs.push("--disable-gpu");
  extraArgs.push(...(process.env.VOXPORT_WEBGPU_ARGS || "--enable-unsafe-webgpu --enable-features=Vulkan --use-angle=swiftshader --use-webgpu-adapter=swiftshader").split(" "));
}
try {
  const out = await runPage({ port: server.port, page, executablePath, profileDir: jobDir, extraArgs, dropArgs,
                              timeout_s: job.timeout_s || 600 });
  process.stdout.write(JSON.stringify(out));
} finally {
  server.close();
}
