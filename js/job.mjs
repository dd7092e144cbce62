// Runs one verify job through Transformers.js; shared by the Node and browser runners.
// job: { task, model, dtypes, device, labels: {id: label}, frames, cases: [{ name, rows: [url-or-path] }] }
// frames (speech recognition): each row is { text, logits: {dims, data} } instead of the text alone.
// task "outputs": the way an embedding model is used, AutoFeatureExtractor + AutoModel, every graph output by name.
// result: { dtype: { load_ms, median_ms, error, cases: [{ name, rows: [probs by label id | text | {text, logits} |
//   {output: {dims, data}}] }] } }

async function outputsModel(transformers, job, options) {
  const { AutoFeatureExtractor, AutoModel } = transformers;
  const extractor = await AutoFeatureExtractor.from_pretrained(job.model);
  const model = await AutoModel.from_pretrained(job.model, options);
  const run = async (audio) => {
    const out = await model(await extractor(audio));
    const named = {};
    for (const [key, t] of Object.entries(out)) {
      if (t && t.dims && t.data) named[key] = { dims: t.dims, data: Array.from(t.data) };
    }
    return named;
  };
  run.dispose = () => model.dispose?.();
  return run;
}

export async function runJob(transformers, job, readRow) {
  const { pipeline } = transformers;
  const results = {};
  for (const dtype of job.dtypes) {
    const entry = { load_ms: null, median_ms: null, error: null, cases: [] };
    results[dtype] = entry;
    try {
      const t0 = performance.now();
      const options = { dtype };
      if (job.device) options.device = job.device;
      if (job.session_options) options.session_options = job.session_options;
      const pipe = job.task === "outputs" ? await outputsModel(transformers, job, options) : await pipeline(job.task, job.model, options);
      entry.load_ms = performance.now() - t0;
      const times = [];
      for (const c of job.cases) {
        const rows = [];
        for (const row of c.rows) {
          const audio = await readRow(row);
          const t = performance.now();
          if (job.task === "outputs") {
            rows.push(await pipe(audio));
            times.push(performance.now() - t);
            continue;
          }
          const out = job.task === "automatic-speech-recognition" ? await pipe(audio) : await pipe(audio, { top_k: null });
          times.push(performance.now() - t);
          if (job.task === "automatic-speech-recognition" && job.frames) {
            // the pipeline's own processor and model on the same audio: the frame logits behind the text (not timed)
            const { logits } = await pipe.model(await pipe.processor(audio));
            rows.push({ text: out.text, logits: { dims: logits.dims, data: Array.from(logits.data) } });
            continue;
          }
          rows.push(job.task === "automatic-speech-recognition" ? out.text : byLabelId(out, job.labels));
        }
        entry.cases.push({ name: c.name, rows });
      }
      entry.times = times.slice();
      times.sort((a, b) => a - b);
      entry.median_ms = times[Math.floor(times.length / 2)];
      await pipe.dispose?.();
    } catch (e) {
      entry.error = String(e && e.message ? e.message : e).split("\n")[0];
    }
  }
  return results;
}

function byLabelId(out, labels) {
  const ids = Object.keys(labels).map(Number).sort((a, b) => a - b);
  const score = new Map(out.map((o) => [o.label, o.score]));
  return ids.map((i) => score.get(labels[i]) ?? NaN);
}
