// The voxport-web pipelines on a folder, one run after another; shared by the Node runner and the browser page.
// job: { model, dtypes, device, runs: [{ kind: "longform" | "stream" | "windows" | "verify", audio, b, sr, frame,
// options }] }; read(ref) -> Float32Array. Returns { dtype: { error, load_ms, results: [...] } }.
export async function runPipelines(web, job, read, sessionOptions = null) {
  const { LongFormCTC, SpeakerVerifier, StreamingCTC, WindowedClassifier } = web;
  const out = {};
  for (const dtype of job.dtypes) {
    const entry = { error: null, results: [] };
    out[dtype] = entry;
    const options = { dtype };
    if (job.device) options.device = job.device;
    if (sessionOptions) options.session_options = sessionOptions;
    const loaded = {};
    const get = async (Cls) => (loaded[Cls.name] ??= await Cls.from_pretrained(job.model, options));
    try {
      for (const run of job.runs) {
        const audio = await read(run.audio);
        const t0 = performance.now();
        let res;
        if (run.kind === "longform") {
          res = await (await get(LongFormCTC))(audio, run.options);
        } else if (run.kind === "stream") {
          const live = await StreamingCTC.from_pretrained(job.model, { ...options, ...run.options });
          const partials = [];
          const finals = [];
          live.addEventListener("partial", (e) => partials.push({ at_s: live.received / live.asr.sampling_rate, text: e.detail.text }));
          live.addEventListener("final", (e) => finals.push({ at_s: live.received / live.asr.sampling_rate, words: e.detail.words }));
          const frame = run.frame ?? 128;
          for (let i = 0; i < audio.length; i += frame) await live.push(audio.subarray(i, i + frame), run.sr);
          res = { ...(await live.end()), partials, finals, peak_buffer: live.buf.length };
        } else if (run.kind === "windows") {
          res = await (await get(WindowedClassifier))(audio, run.options);
        } else if (run.kind === "verify") {
          const r = await (await get(SpeakerVerifier))(audio, await read(run.b));
          res = { score: r.score, embeddings: r.embeddings.map((e) => Array.from(e)) };
        } else {
          throw new Error(`unknown pipeline ${run.kind}`);
        }
        entry.results.push({ ...res, ms: performance.now() - t0 });
      }
    } catch (e) {
      entry.error = String(e && e.message ? e.message : e).split("\n")[0];
    }
    for (const m of Object.values(loaded)) await m.dispose?.();
  }
  return out;
}
