// A streaming band-limited resampler (windowed sinc, Blackman window, 32 zero crossings of the lower rate's
// Nyquist filter): output sample k sits at input time k * from / to and is computed once every input sample its
// filter reaches has arrived, so the output does not depend on how the input was cut into frames.

const ZEROS = 32;

export class Resampler {
  constructor(from, to) {
    this.from = from;
    this.to = to;
    this.ratio = from / to; // input samples per output sample
    this.cutoff = Math.min(1, to / from) * 0.97; // of the input Nyquist rate, a little under the lower Nyquist
    this.half = Math.ceil(ZEROS / this.cutoff); // filter half-width in input samples
    this.buffer = new Float32Array(0); // input from index `offset` on
    this.offset = 0;
    this.k = 0; // next output sample
    this.total = 0; // input samples seen
  }

  _kernel(x) {
    if (x === 0) return this.cutoff;
    if (Math.abs(x) >= this.half) return 0;
    const w = 0.42 + 0.5 * Math.cos((Math.PI * x) / this.half) + 0.08 * Math.cos((2 * Math.PI * x) / this.half);
    return (Math.sin(Math.PI * this.cutoff * x) / (Math.PI * x)) * w;
  }

  _emit(limit, padded) {
    const out = [];
    for (;;) {
      const t = this.k * this.ratio;
      const hi = Math.floor(t) + this.half;
      if (t >= limit || (!padded && hi >= this.total)) break;
      const lo = Math.ceil(t) - this.half;
      let acc = 0;
      for (let i = Math.max(lo, 0); i <= Math.min(hi, this.total - 1); i++) {
        acc += this.buffer[i - this.offset] * this._kernel(t - i);
      }
      out.push(acc);
      this.k += 1;
    }
    // input no output can reach any more is let go
    const keep = Math.max(0, Math.ceil(this.k * this.ratio) - this.half - this.offset);
    if (keep > 0) {
      this.buffer = this.buffer.slice(keep);
      this.offset += keep;
    }
    return Float32Array.from(out);
  }

  push(frames) {
    const grown = new Float32Array(this.buffer.length + frames.length);
    grown.set(this.buffer);
    grown.set(frames, this.buffer.length);
    this.buffer = grown;
    this.total += frames.length;
    return this._emit(this.total, false);
  }

  /** The output samples still owed at the end of the stream (the input's end padded with silence). */
  flush() {
    return this._emit(this.total, true);
  }
}
