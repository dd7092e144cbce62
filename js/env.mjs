// Transformers.js set up for a page served by the browser runners: the folder under /model/, onnxruntime-web's
// WASM files under /ort/, no network, no cache.
export function setupEnv(env, job) {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = "/model/";
  env.useBrowserCache = false;
  env.backends.onnx.wasm.wasmPaths = { mjs: "/ort/ort-wasm-simd-threaded.asyncify.mjs", wasm: "/ort/ort-wasm-simd-threaded.asyncify.wasm" };
  env.backends.onnx.wasm.numThreads = job.threads || navigator.hardwareConcurrency;
}
