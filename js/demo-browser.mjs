// node demo-browser.mjs JOB.json [chromium path] -> voxport-web's demo page (js/voxport-web/demo) on a folder in
// headless Chromium, the fake capture device playing job.wav as the microphone; prints what the page showed (JSON)
// and saves a screenshot. job: { model (folder), wav, seconds, dtype, screenshot }
import fs from "node:fs";
import path from "node:path";
import { here, runPage, serve } from "./browser.mjs";

const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const executablePath = process.argv[3] || "/usr/bin/chromium";
const jobDir = path.dirname(path.resolve(process.argv[2]));
const server = await serve({ "/demo.html": path.join(here, "voxport-web/demo/index.html") }, {
  "/model/m/": job.model,
  "/dist/": path.join(here, "node_modules/@huggingface/transformers/dist"),
  "/ort/": path.join(here, "node_modules/onnxruntime-web/dist"),
  "/web/": path.join(here, "voxport-web"),
});
const extraArgs = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", `--use-file-for-fake-audio-capture=${job.wav}%noloop`,
                   "--autoplay-policy=no-user-gesture-required"];
try {
  const out = await runPage({ port: server.port, page: `demo.html?model=m&dtype=${job.dtype || "q8"}&autostart=1&seconds=${job.seconds}`,
                              executablePath, profileDir: jobDir, extraArgs, timeout_s: job.seconds * 3 + 120, result: "__demo",
                              screenshot: job.screenshot });
  process.stdout.write(JSON.stringify(out));
} finally {
  server.close();
}
