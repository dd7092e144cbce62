// voxport-web: the deployed pipelines around a voxport folder, on top of Transformers.js (its feature extractors,
// tokenizers and models; no second copy of model code), computing what voxport's Python reference computes:
// - LongFormCTC: transformers' pipeline("automatic-speech-recognition", chunk_length_s, stride_length_s,
//   return_timestamps) for CTC models, memory bounded by the chunk;
// - StreamingCTC: the same chunks fed from a live source (any frame size and rate), partial and final events;
// - WindowedClassifier: `voxport run --window-s --hop-s --ema` (rolling windows, exponential moving average);
// - SpeakerVerifier: embeddings and the cosine score of two clips.
import { AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, AutoModelForCTC, AutoTokenizer }
  from "@huggingface/transformers";

import { CtcVocab, argmaxFrames, chunkGeometry, chunkSpans, framesKept, minSamples } from "./ctc.js";
import { Resampler } from "./resample.js";
import { cosine, ema, slidingWindows, softmax } from "./windows.js";

export { CtcVocab, argmaxFrames, chunkGeometry, chunkSpans, framesKept, minSamples, roundHalfEven } from "./ctc.js";
export { openMicrophone } from "./microphone.js";
export { Resampler } from "./resample.js";
export { cosine, ema, slidingWindows, softmax } from "./windows.js";

export const VERSION = "0.1.0";

/** A class whose instances are called like functions (as Transformers.js pipelines are). */
class Callable extends Function {
  constructor() {
    super();
    return new Proxy(this, { apply: (target, _that, args) => target._call(...args) });
  }
}

function modelOptions(options) {
  const out = { dtype: options.dtype ?? "q8" };
  if (options.device) out.device = options.device;
  if (options.session_options) out.session_options = options.session_options;
  return out;
}

function floatAudio(audio) {
  return audio instanceof Float32Array ? audio : Float32Array.from(audio);
}

/** Long recordings through a CTC folder, as transformers' ASR pipeline with chunk_length_s / stride_length_s. */
export class LongFormCTC extends Callable {
  static async from_pretrained(model_id, options = {}) {
    const self = new LongFormCTC();
    const [config, extractor, tokenizer, model] = await Promise.all([
      AutoConfig.from_pretrained(model_id, options),
      AutoFeatureExtractor.from_pretrained(model_id, options),
      AutoTokenizer.from_pretrained(model_id, options),
      AutoModelForCTC.from_pretrained(model_id, { ...options, ...modelOptions(options) }),
    ]);
    self.config = config;
    self.extractor = extractor;
    self.model = model;
    self.vocab = CtcVocab.fromFiles(tokenizer._tokenizerJSON ?? {}, tokenizer._tokenizerConfig ?? {});
    self.sampling_rate = extractor.config?.sampling_rate ?? 16000;
    // transformers' inputs_to_logits_ratio: samples per CTC frame
    self.align = (config.conv_stride ?? [1]).reduce((a, b) => a * b, 1);
    self.min_samples = config.conv_kernel ? minSamples(config.conv_kernel, config.conv_stride) : 1;
    return self;
  }

  /** The frame ids of one stretch of audio (normalized alone, as the pipeline normalizes each chunk); strides: the
   * chunk's [left, right] stride in samples, whose frames are dropped (null: every frame, the whole clip). */
  async frameIds(audio, strides = null) {
    const inputs = await this.extractor(audio);
    const { logits } = await this.model(inputs);
    const [, frames, size] = logits.dims;
    const [a, b] = strides ? framesKept(audio.length, this.align, strides[0], strides[1]) : [0, frames];
    return argmaxFrames(logits.data, size, Math.max(0, a), Math.min(frames, b));
  }

  /** The pipeline's chunks of n samples; a last chunk too short for the model (it holds frames of the previous chunk's
   * right stride only) is left out, as `voxport run` leaves it out. */
  spans(n, chunk_length_s, stride_length_s = null) {
    const all = chunkSpans(n, this.sampling_rate, this.align, chunk_length_s, stride_length_s);
    const ok = all.filter(([s, e]) => e - s >= this.min_samples);
    return ok.length ? ok : all.slice(0, 1);
  }

  /** { text, chunks? }: chunks are words ("word") or characters ("char") with [start, end] seconds. */
  async _call(audio, { chunk_length_s = 0, stride_length_s = null, return_timestamps = false } = {}) {
    audio = floatAudio(audio);
    const ids = [];
    if (chunk_length_s > 0) {
      for (const [start, end, left, right] of this.spans(audio.length, chunk_length_s, stride_length_s)) {
        ids.push(...(await this.frameIds(audio.subarray(start, end), [left, right])));
      }
    } else {
      ids.push(...(await this.frameIds(audio)));
    }
    return this.result(ids, return_timestamps);
  }

  result(ids, return_timestamps = false) {
    const out = { text: this.vocab.text(ids) };
    const sec = this.align / this.sampling_rate;
    if (return_timestamps === "word") {
      out.chunks = this.vocab.words(ids).map(([w, s, e]) => ({ text: w, timestamp: [s * sec, e * sec] }));
    } else if (return_timestamps === "char" || return_timestamps === true) {
      out.chunks = this.vocab.chars(ids).map(([c, s, e]) => ({ text: c, timestamp: [s * sec, e * sec] }));
    }
    return out;
  }

  async dispose() {
    await this.model?.dispose?.();
  }
}

/**
 * A live source (microphone frames of any size and sample rate) through LongFormCTC's chunks: a chunk is final once
 * the audio after it has begun (so it is not the recording's last), and its kept frames then never change. Events:
 * "partial" { text } (final text + a provisional decode of the audio not yet final, every `partial_every_s` of new
 * audio), "final" { words: [{ text, timestamp }], text } (words that end before the final frames' edge). end() runs
 * what is left and returns { text, chunks }: the long-form result of the same (resampled) audio, chunk and stride.
 * Latency: a word is final at most chunk_length_s after it was spoken (its chunk plus the next chunk's start).
 */
export class StreamingCTC extends EventTarget {
  static async from_pretrained(model_id, options = {}) {
    const self = new StreamingCTC();
    self.asr = await LongFormCTC.from_pretrained(model_id, options);
    self.reset(options);
    return self;
  }

  reset({ chunk_length_s = 10, stride_length_s = null, partial_every_s = 1.0, keep_audio = false } = {}) {
    const sr = this.asr.sampling_rate;
    this.chunk_length_s = chunk_length_s;
    this.stride_length_s = stride_length_s ?? chunk_length_s / 6;
    Object.assign(this, chunkGeometry(sr, this.asr.align, chunk_length_s, this.stride_length_s));
    this.partialEvery = Math.round(partial_every_s * sr);
    this.keepAudio = keep_audio; // keep every sample received (audio()), e.g. to check the stream against long-form
    this.buf = new Float32Array(1 << 16); // samples from absolute index `base` on, `len` of them
    this.base = 0;
    this.len = 0;
    this.ids = [];
    this.next = 0; // index of the next chunk to finalize
    this.wordsSent = 0;
    this.sinceParcel = 0;
    this.resampler = null;
    this.queue = Promise.resolve();
    return this;
  }

  /** Samples received so far. */
  get received() {
    return this.base + this.len;
  }

  _append(frames) {
    if (this.len + frames.length > this.buf.length) {
      let cap = this.buf.length;
      while (cap < this.len + frames.length) cap *= 2;
      const grown = new Float32Array(cap);
      grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    this.buf.set(frames, this.len);
    this.len += frames.length;
  }

  /** Every sample received, at the model's rate (with keep_audio). */
  audio() {
    if (this.base > 0) throw new Error("StreamingCTC kept only the audio still needed; reset({ keep_audio: true }) keeps it all");
    return Float32Array.from(this.buf.subarray(0, this.len));
  }

  /** Absolute samples [a, b) (a >= base). */
  _slice(a, b) {
    return this.buf.subarray(a - this.base, Math.min(b, this.received) - this.base);
  }

  /** Frames at `sampleRate` (resampled to the model's). Returns a promise settled when they are processed. */
  push(frames, sampleRate = this.asr.sampling_rate) {
    const work = this.queue.then(() => this._push(floatAudio(frames), sampleRate));
    this.queue = work.catch(() => {});
    return work;
  }

  async _push(frames, sampleRate) {
    if (sampleRate !== this.asr.sampling_rate) {
      if (!this.resampler || this.resampler.from !== sampleRate) this.resampler = new Resampler(sampleRate, this.asr.sampling_rate);
      frames = this.resampler.push(frames);
    }
    this._append(frames);
    this.sinceParcel += frames.length;
    let finalized = false;
    // chunk i is final when more audio than its end has arrived (then it is not the recording's last chunk)
    while (this.received > this.next * this.step + this.chunkLen) {
      const start = this.next * this.step;
      const left = this.next === 0 ? 0 : this.side;
      this.ids.push(...(await this.asr.frameIds(Float32Array.from(this._slice(start, start + this.chunkLen)), [left, this.side])));
      this.next += 1;
      finalized = true;
    }
    if (finalized) {
      // what no chunk will read again is let go: memory bounded by the chunk, not by the stream
      const keep = this.next * this.step;
      if (keep > this.base && !this.keepAudio) {
        this.buf.copyWithin(0, keep - this.base, this.len);
        this.len -= keep - this.base;
        this.base = keep;
      }
      this._emitFinal(false);
    }
    if (this.sinceParcel >= this.partialEvery) {
      this.sinceParcel = 0;
      const start = this.next * this.step;
      const tail = Float32Array.from(this._slice(start, this.received));
      let ids = this.ids;
      if (tail.length > Math.max(this.asr.min_samples, this.next === 0 ? 0 : this.side)) {
        ids = ids.concat(await this.asr.frameIds(tail, [this.next === 0 ? 0 : this.side, 0]));
      }
      this.dispatchEvent(new CustomEvent("partial", { detail: { text: this.asr.vocab.text(ids), final_text: this.asr.vocab.text(this.ids) } }));
    }
  }

  _emitFinal(all) {
    const words = this.asr.result(this.ids, "word").chunks;
    // the last word may go on in the next chunk: held back until then (or the end)
    const ready = all ? words.length : Math.max(0, words.length - 1);
    if (ready > this.wordsSent) {
      const detail = { words: words.slice(this.wordsSent, ready), text: this.asr.vocab.text(this.ids) };
      this.wordsSent = ready;
      this.dispatchEvent(new CustomEvent("final", { detail }));
    }
  }

  /** The rest of the stream as the recording's last chunks; returns the long-form { text, chunks } of it all. */
  async end() {
    await this.queue;
    if (this.resampler) {
      const rest = this.resampler.flush();
      if (rest.length) await this._push(rest, this.asr.sampling_rate);
    }
    const spans = this.asr.spans(this.received, this.chunk_length_s, this.stride_length_s);
    for (const [start, end, left, right] of spans.filter(([s]) => s >= this.next * this.step)) {
      this.ids.push(...(await this.asr.frameIds(Float32Array.from(this._slice(start, end)), [left, right])));
    }
    this.next = spans.length;
    this._emitFinal(true);
    return this.asr.result(this.ids, "word");
  }
}

/** Rolling windows over a clip, each classified alone, smoothed by an exponential moving average. */
export class WindowedClassifier extends Callable {
  static async from_pretrained(model_id, options = {}) {
    const self = new WindowedClassifier();
    const [config, extractor, model] = await Promise.all([
      AutoConfig.from_pretrained(model_id, options),
      AutoFeatureExtractor.from_pretrained(model_id, options),
      AutoModelForAudioClassification.from_pretrained(model_id, { ...options, ...modelOptions(options) }),
    ]);
    self.extractor = extractor;
    self.model = model;
    self.sampling_rate = extractor.config?.sampling_rate ?? 16000;
    const id2label = config.id2label ?? {};
    self.labels = Object.keys(id2label).map(Number).sort((a, b) => a - b).map((i) => id2label[i]);
    return self;
  }

  /** Class probabilities of one window. */
  async probs(audio) {
    const { logits } = await this.model(await this.extractor(audio));
    return softmax(Array.from(logits.data));
  }

  /** As `voxport run --window-s --hop-s --ema`: { labels, windows, decision }. */
  async _call(audio, { window_s = 0.75, hop_s = null, ema: alpha = null } = {}) {
    audio = floatAudio(audio);
    const sr = this.sampling_rate;
    const w = Math.max(1, Math.round(window_s * sr));
    const hop = Math.max(1, Math.round((hop_s ?? window_s) * sr));
    const starts = slidingWindows(audio.length, w, hop);
    const probs = [];
    for (const s of starts) probs.push(await this.probs(audio.subarray(s, s + w)));
    const smooth = alpha === null ? null : ema(probs, alpha);
    const named = (p) => Object.fromEntries(this.labels.map((l, i) => [l, p[i]]));
    const top = (p) => p.map((v, i) => ({ label: this.labels[i], score: v })).sort((a, b) => b.score - a.score);
    const windows = starts.map((s, t) => {
      const item = { start_s: s / sr, end_s: Math.min(s + w, audio.length) / sr, label: top(probs[t])[0].label, scores: named(probs[t]) };
      if (smooth) {
        item.smoothed_label = top(smooth[t])[0].label;
        item.smoothed = named(smooth[t]);
      }
      return item;
    });
    const decision = smooth ? smooth[smooth.length - 1] : probs[0].map((_, i) => probs.reduce((a, p) => a + p[i], 0) / probs.length);
    return { labels: top(decision), windows, decision: smooth ? "ema of windows (last value)" : "mean of windows" };
  }

  async dispose() {
    await this.model?.dispose?.();
  }
}

/** Embeddings of a folder with an `embeddings` output, and the cosine score of two clips. */
export class SpeakerVerifier extends Callable {
  static async from_pretrained(model_id, options = {}) {
    const self = new SpeakerVerifier();
    const [extractor, model] = await Promise.all([
      AutoFeatureExtractor.from_pretrained(model_id, options),
      AutoModel.from_pretrained(model_id, { ...options, ...modelOptions(options) }),
    ]);
    self.extractor = extractor;
    self.model = model;
    return self;
  }

  async embed(audio) {
    const out = await this.model(await this.extractor(floatAudio(audio)));
    if (!out.embeddings) throw new Error("this folder has no `embeddings` output");
    return Float32Array.from(out.embeddings.data);
  }

  /** { score: cosine of the two clips' embeddings, embeddings: [a, b] } */
  async _call(a, b) {
    const ea = await this.embed(a);
    const eb = await this.embed(b);
    return { score: cosine(ea, eb), embeddings: [ea, eb] };
  }

  async dispose() {
    await this.model?.dispose?.();
  }
}
