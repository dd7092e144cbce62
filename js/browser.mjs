// Shared by the browser runners: a localhost server with cross-origin isolation (SharedArrayBuffer for WASM
// threads) and headless Chromium through playwright-core; the page sets window.__voxport when it is done.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const here = path.dirname(fileURLToPath(import.meta.url));
const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json",
                ".wasm": "application/wasm", ".onnx": "application/octet-stream" };

/** files: exact url -> file; roots: url prefix -> folder. Resolves to { port, close }. */
export async function serve(files, roots, port = 0) {
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(new URL(req.url, "http://x").pathname);
    let file = files[url] ?? null;
    if (url === "/favicon.ico") { res.statusCode = 204; res.end(); return; }  // keeps the console to real errors
    if (!file) for (const [prefix, dir] of Object.entries(roots)) {
      if (url.startsWith(prefix)) { file = path.join(dir, url.slice(prefix.length)); if (!file.startsWith(dir)) file = null; break; }
    }
    res.setHeader("Cross-Origin-Opener-Policy", "same-origin");
    res.setHeader("Cross-Origin-Embedder-Policy", "require-corp");
    res.setHeader("Cross-Origin-Resource-Policy", "same-origin");
    if (!file || !fs.existsSync(file) || fs.statSync(file).isDirectory()) { res.statusCode = 404; res.end(); return; }
    res.setHeader("Content-Type", types[path.extname(file)] || "application/octet-stream");
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { port: server.address().port, close: () => server.close() };
}

/** Opens http://127.0.0.1:port/page in headless Chromium and returns window.__voxport (with the console's errors). */
export async function runPage({ port, page: pagePath, executablePath, profileDir, extraArgs = [], timeout_s = 600, dropArgs = [],
                                result = "__voxport", screenshot = null }) {
  const userDataDir = fs.mkdtempSync(path.join(profileDir, "profile-"));
  const args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-quic", "--disable-sync"].filter((a) => !dropArgs.includes(a)).concat(extraArgs);
  const context = await chromium.launchPersistentContext(userDataDir, { executablePath, headless: true, args });
  const messages = [];
  try {
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") messages.push(m.text().slice(0, 300)); });
    page.on("pageerror", (e) => messages.push(String(e).slice(0, 300)));
    await page.goto(`http://127.0.0.1:${port}/${pagePath}`);
    // result: the page's global that holds its answer ("__voxport"), or one whose `done` says it finished
    await page.waitForFunction((name) => window[name] && (name === "__voxport" || window[name].done), result,
                               { timeout: timeout_s * 1000, polling: 250 });
    const out = await page.evaluate((name) => window[name], result);
    if (screenshot) {
      await page.setViewportSize({ width: 960, height: 640 });
      await page.screenshot({ path: screenshot });
    }
    out.console = messages.slice(0, 20);
    return out;
  } finally {
    await context.close();
  }
}
