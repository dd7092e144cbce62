// node demo-server.mjs FOLDER [port] -> serves voxport-web's demo page on a built folder at http://127.0.0.1:PORT/
// (open it in Chromium, allow the microphone). The folder is served as the model "m".
import path from "node:path";
import { here, serve } from "./browser.mjs";

const folder = path.resolve(process.argv[2] || ".");
const server = await serve({ "/": path.join(here, "voxport-web/demo/index.html") }, {
  "/model/m/": folder,
  "/dist/": path.join(here, "node_modules/@huggingface/transformers/dist"),
  "/ort/": path.join(here, "node_modules/onnxruntime-web/dist"),
  "/web/": path.join(here, "voxport-web"),
}, Number(process.argv[3] || 0));
console.log(`voxport-web demo on ${folder}: http://127.0.0.1:${server.port}/?model=m&dtype=q8`);
