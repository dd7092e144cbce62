// The pure parts against values worked out by hand or by Python's rules.
import assert from "node:assert/strict";
import { test } from "node:test";

import { CtcVocab, Resampler, chunkSpans, ema, framesKept, minSamples, roundHalfEven, slidingWindows } from "../src/index.js";

test("Python's round: halves go to the even neighbour", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, 2.4, 2.6].map(roundHalfEven), [0, 2, 2, 0, 2, 3]);
});

test("chunks as transformers' chunk_iter: no left stride first, no right stride last, frame-rounded", () => {
  // 10 s chunks, 2 s strides, 16 kHz, 320 samples a frame: step 6 s
  const spans = chunkSpans(25 * 16000, 16000, 320, 10, 2);
  assert.deepEqual(spans, [[0, 160000, 0, 32000], [96000, 256000, 32000, 32000], [192000, 352000, 32000, 32000],
    [288000, 400000, 32000, 0]]);
  assert.deepEqual(framesKept(160000, 320, 32000, 32000), [100, 400]);
  assert.throws(() => chunkSpans(1000, 16000, 320, 1, 0.5), /twice/);
});

test("the CTC decode keeps <unk> between letters, two spaces around a blank, and times words in frames", () => {
  const vocab = CtcVocab.fromFiles({ model: { vocab: { "<pad>": 0, "<unk>": 1, "|": 2, a: 3, b: 4 } } }, { pad_token: "<pad>" });
  const ids = [3, 3, 1, 3, 0, 2, 0, 2, 4, 4, 0, 4, 2];
  assert.equal(vocab.text(ids), "a<unk>a  bb");
  assert.deepEqual(vocab.words(ids), [["a<unk>a", 0, 4], ["bb", 8, 12]]);
  assert.equal(vocab.text([99, 3]), "<unk>a"); // an id outside the vocabulary reads as the unk token
});

test("the moving average and the windows of voxport run", () => {
  assert.deepEqual(ema([[1, 0], [0, 1], [0, 1]], 0.5), [[1, 0], [0.5, 0.5], [0.25, 0.75]]);
  assert.deepEqual(slidingWindows(100, 40, 20), [0, 20, 40, 60]);
  assert.deepEqual(slidingWindows(30, 40, 20), [0]);
});

test("the wav2vec2 encoder's fewest samples for two frames", () => {
  assert.equal(minSamples([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]), 720); // wav2vec2-base: 400 + 320
});

test("resampling does not depend on how the input is cut, and keeps a tone", () => {
  const n = 44100;
  const x = Float32Array.from({ length: n }, (_, i) => Math.sin((2 * Math.PI * 440 * i) / 44100));
  const whole = new Resampler(44100, 16000);
  const a = [...whole.push(x), ...whole.flush()];
  const cut = new Resampler(44100, 16000);
  const b = [];
  for (let i = 0; i < n; i += 777) b.push(...cut.push(x.subarray(i, i + 777)));
  b.push(...cut.flush());
  assert.equal(a.length, b.length);
  assert.ok(Math.abs(a.length - 16000) <= 1, String(a.length));
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-6);
  // away from the ends the tone is the tone at 16 kHz
  for (let i = 200; i < 15800; i += 97) assert.ok(Math.abs(a[i] - Math.sin((2 * Math.PI * 440 * i) / 16000)) < 2e-3, String(i));
});
