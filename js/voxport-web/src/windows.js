// Window arithmetic shared by the classifiers: softmax, the exponential moving average of `voxport run --ema`,
// window starts, cosine scores. float64 throughout, as numpy computes them in the Python reference.

export function softmax(logits) {
  const m = Math.max(...logits);
  const e = logits.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/** smooth[0] = probs[0]; smooth[t] = alpha * probs[t] + (1 - alpha) * smooth[t - 1]. */
export function ema(probs, alpha) {
  const out = [];
  for (const p of probs) {
    const prev = out[out.length - 1];
    out.push(prev ? p.map((v, i) => alpha * v + (1 - alpha) * prev[i]) : p.slice());
  }
  return out;
}

/** Window starts in samples: every hop while a whole window fits; one window at 0 for a shorter clip. */
export function slidingWindows(n, window, hop) {
  if (n < window) return [0];
  const starts = [];
  for (let s = 0; s + window <= n; s += hop) starts.push(s);
  return starts;
}

export function cosine(a, b) {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}
