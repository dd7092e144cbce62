// Greedy CTC as transformers' automatic-speech-recognition pipeline computes it (the Python reference voxport is
// verified against): chunks and strides as its chunk_iter, the stride frames dropped as its rescale_stride, then one
// decode over the kept frames with skip_special_tokens=false (every token kept, equal neighbours merged, the blank
// dropped, the word delimiter as a space; text stripped; lower-cased / cleaned only where the tokenizer config asks).

/** Python's round(): halves to the even neighbour (Math.round sends them up). */
export function roundHalfEven(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * [start, end, strideLeft, strideRight] in samples, as transformers' pipeline cuts long audio: lengths rounded to
 * whole CTC frames (multiples of `align` = inputs_to_logits_ratio), no left stride on the first chunk, no right stride
 * on the last, chunks no longer than their left stride skipped. stride_length_s defaults to chunk_length_s / 6.
 */
export function chunkSpans(n, sr, align, chunk_length_s, stride_length_s = null) {
  const { chunkLen, side, step } = chunkGeometry(sr, align, chunk_length_s, stride_length_s);
  const out = [];
  for (let start = 0; start < n; start += step) {
    const end = Math.min(start + chunkLen, n);
    const isLast = start + chunkLen >= n;
    const left = start === 0 ? 0 : side;
    const right = isLast ? 0 : side;
    if (end - start > left) out.push([start, end, left, right]);
    if (isLast) break;
  }
  return out;
}

/** { chunkLen, side, step } in samples: chunk and stride rounded to whole CTC frames, as the pipeline rounds them. */
export function chunkGeometry(sr, align, chunk_length_s, stride_length_s = null) {
  if (stride_length_s === null || stride_length_s === undefined) stride_length_s = chunk_length_s / 6;
  const chunkLen = roundHalfEven((chunk_length_s * sr) / align) * align;
  const side = roundHalfEven((stride_length_s * sr) / align) * align;
  const step = chunkLen - 2 * side;
  if (step <= 0) throw new Error("chunk_length_s must be longer than twice stride_length_s (after rounding to CTC frames)");
  return { chunkLen, side, step };
}

/** Fewest samples that give the wav2vec2 feature encoder (conv_kernel, conv_stride) two frames. */
export function minSamples(kernels, strides) {
  const frames = (n) => kernels.reduce((len, k, i) => (len < k ? 0 : Math.floor((len - k) / strides[i]) + 1), n);
  let n = 1;
  while (frames(n) < 2) n += 1;
  return n;
}

/** The chunk's logit frames [a, b) outside its strides (transformers' rescale_stride). */
export function framesKept(n, align, left, right) {
  const tokens = roundHalfEven(n / align);
  return [roundHalfEven((left / n) * tokens), tokens - roundHalfEven((right / n) * tokens)];
}

const CLEANUPS = [[" .", "."], [" ?", "?"], [" !", "!"], [" ,", ","], [" ' ", "'"], [" n't", "n't"], [" 'm", "'m"],
  [" 's", "'s"], [" 've", "'ve"], [" 're", "'re"]];

/** The decoding table of a CTC folder: id -> token, blank, delimiter, unk, do_lower_case, clean-up. */
export class CtcVocab {
  constructor({ id2tok, pad = "<pad>", delimiter = "|", unk = "<unk>", lower = false, cleanup = false }) {
    this.id2tok = id2tok;
    this.pad = pad;
    this.delimiter = delimiter;
    this.unk = unk;
    this.lower = lower;
    this.cleanup = cleanup;
  }

  /** From a folder's tokenizer.json (parsed) and tokenizer_config.json (parsed). */
  static fromFiles(tokenizerJson, tokenizerConfig = {}) {
    const text = (v) => (v && typeof v === "object" ? v.content : v);
    const id2tok = new Map();
    for (const [tok, id] of Object.entries(tokenizerJson.model?.vocab ?? {})) id2tok.set(Number(id), tok);
    for (const t of tokenizerJson.added_tokens ?? []) id2tok.set(Number(t.id), t.content);
    return new CtcVocab({
      id2tok,
      pad: text(tokenizerConfig.pad_token) ?? "<pad>",
      delimiter: text(tokenizerConfig.word_delimiter_token) ?? "|",
      unk: text(tokenizerConfig.unk_token) ?? "<unk>",
      lower: Boolean(tokenizerConfig.do_lower_case),
      cleanup: Boolean(tokenizerConfig.clean_up_tokenization_spaces),
    });
  }

  /** [[char, firstFrame, endFrame]] after merging repeats and dropping the blank; the delimiter as " ". */
  chars(ids) {
    const out = [];
    let prev = null;
    let start = 0;
    const flush = (tok, s, e) => {
      if (tok !== null && tok !== this.pad) out.push([tok === this.delimiter ? " " : tok, s, e]);
    };
    for (let j = 0; j < ids.length; j++) {
      const tok = this.id2tok.get(Number(ids[j])) ?? this.unk;
      if (tok !== prev) {
        flush(prev, start, j);
        prev = tok;
        start = j;
      }
    }
    flush(prev, start, ids.length);
    return out;
  }

  text(ids) {
    let text = this.chars(ids).map((c) => c[0]).join("").replace(/^\s+|\s+$/g, "");
    if (this.lower) text = text.toLowerCase();
    if (this.cleanup) for (const [a, b] of CLEANUPS) text = text.split(a).join(b);
    return text;
  }

  /** [[word, startFrame, endFrame]]: runs of characters between spaces (transformers' _get_word_offsets). */
  words(ids) {
    const words = [];
    let cur = null;
    for (const [c, s, e] of this.chars(ids)) {
      if (c === " ") {
        if (cur) words.push(cur);
        cur = null;
      } else if (cur === null) {
        cur = [c, s, e];
      } else {
        cur[0] += c;
        cur[2] = e;
      }
    }
    if (cur) words.push(cur);
    return words;
  }
}

/** Per-frame argmax of logits data [T, V] (row-major), frames [a, b). */
export function argmaxFrames(data, vocabSize, a, b) {
  const ids = [];
  for (let t = a; t < b; t++) {
    let best = 0;
    let bestV = -Infinity;
    const o = t * vocabSize;
    for (let v = 0; v < vocabSize; v++) {
      if (data[o + v] > bestV) {
        bestV = data[o + v];
        best = v;
      }
    }
    ids.push(best);
  }
  return ids;
}
