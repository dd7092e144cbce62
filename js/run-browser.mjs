// node run-browser.mjs JOB.json [chromium path] -> serves the job on 127.0.0.1 with cross-origin isolation,
// runs it in headless Chromium through playwright-core, prints the result JSON on stdout.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const executablePath = process.argv[3] || "/usr/bin/chromium";
const jobDir = path.dirname(path.resolve(process.argv[2]));
const roots = {
  "/model/m/": job.model,
  "/dist/": path.join(here, "node_modules/@huggingface/transformers/dist"),
  "/ort/": path.join(here, "node_modules/onnxruntime-web/dist"),
  "/job/": jobDir,
};
const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json",
                ".wasm": "application/wasm", ".onnx": "application/octet-stream" };

const server = http.createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, "http://x").pathname);
  let file = null;
  if (url === "/favicon.ico") { res.statusCode = 204; res.end(); return; }  // keeps the console to real errors
  if (url === "/" || url === "/page.html") file = path.join(here, "page.html");
  else if (url === "/job.mjs") file = path.join(here, "job.mjs");
  else for (const [prefix, dir] of Object.entries(roots)) {
    if (url.startsWith(prefix)) { file = path.join(dir, url.slice(prefix.length)); if (!file.startsWith(dir)) file = null; break; }
  }
  res.setHeader("Cross-Origin-Opener-Policy", "same-origin");
  res.setHeader("Cross-Origin-Embedder-Policy", "require-corp");
  res.setHeader("Cross-Origin-Resource-Policy", "same-origin");
  if (!file || !fs.existsSync(file) || fs.statSync(file).isDirectory()) { res.statusCode = 404; res.end(); return; }
  res.setHeader("Content-Type", types[path.extname(file)] || "application/octet-stream");
  fs.createReadStream(file).pipe(res);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const port = server.address().port;

// rows are served from the job folder
job.cases = job.cases.map((c) => ({ ...c, rows: c.rows.map((p) => `/job/${path.relative(jobDir, p)}`) }));
fs.writeFileSync(path.join(jobDir, "job.json"), JSON.stringify(job));

const userDataDir = fs.mkdtempSync(path.join(jobDir, "profile-"));
const args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--no-first-run", "--disable-quic", "--disable-sync"];
if (job.device === "webgpu") {
  args.splice(args.indexOf("--disable-gpu"), 1);
  args.push(...(process.env.VOXPORT_WEBGPU_ARGS || "--enable-unsafe-webgpu --enable-features=Vulkan --use-angle=swiftshader --use-webgpu-adapter=swiftshader").split(" "));
}
const context = await chromium.launchPersistentContext(userDataDir, { executablePath, headless: true, args });
const console_ = [];
try {
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") console_.push(m.text().slice(0, 300)); });
  page.on("pageerror", (e) => console_.push(String(e).slice(0, 300)));
  await page.goto(`http://127.0.0.1:${port}/page.html`);
  await page.waitForFunction(() => window.__voxport, null, { timeout: (job.timeout_s || 600) * 1000 });
  const out = await page.evaluate(() => window.__voxport);
  out.console = console_.slice(0, 20);
  process.stdout.write(JSON.stringify(out));
} finally {
  await context.close();
  server.close();
}
