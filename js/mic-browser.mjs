// node mic-browser.mjs JOB.json [chromium path] -> StreamingCTC in headless Chromium fed by the microphone path:
// getUserMedia + an AudioWorklet, the fake capture device playing job.wav. Prints the page's result JSON.
// job: { model (folder), wav, seconds, dtype, chunk_length_s, stride_length_s, threads }
import fs from "node:fs";
import path from "node:path";
import { here, runPage, serve } from "./browser.mjs";

const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const executablePath = process.argv[3] || "/usr/bin/chromium";
const jobDir = path.dirname(path.resolve(process.argv[2]));
fs.writeFileSync(path.join(jobDir, "job.json"), JSON.stringify(job));
const server = await serve({ "/mic.html": path.join(here, "mic.html"), "/env.mjs": path.join(here, "env.mjs") }, {
  "/model/m/": job.model,
  "/dist/": path.join(here, "node_modules/@huggingface/transformers/dist"),
  "/ort/": path.join(here, "node_modules/onnxruntime-web/dist"),
  "/web/": path.join(here, "voxport-web"),
  "/job/": jobDir,
});
const extraArgs = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", `--use-file-for-fake-audio-capture=${job.wav}%noloop`,
                   "--autoplay-policy=no-user-gesture-required"];
try {
  const out = await runPage({ port: server.port, page: "mic.html", executablePath, profileDir: jobDir, extraArgs,
                              timeout_s: (job.seconds || 30) * 3 + 120 });
  process.stdout.write(JSON.stringify(out));
} finally {
  server.close();
}
