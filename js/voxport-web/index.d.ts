// Type declarations of voxport-web.

export declare const VERSION: string;

export interface LoadOptions {
  /** Transformers.js dtype: "fp32", "fp16", "q8", "int8", "uint8", "q4" (default "q8"). */
  dtype?: string;
  /** "wasm", "webgpu", "cpu" ... as Transformers.js takes it. */
  device?: string;
  session_options?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface TimedChunk {
  text: string;
  /** [start, end] in seconds. */
  timestamp: [number, number];
}

export interface CtcResult {
  text: string;
  chunks?: TimedChunk[];
}

export interface LongFormOptions {
  /** Chunk length in seconds (0: the whole clip in one pass). */
  chunk_length_s?: number;
  /** Stride on each side of a chunk in seconds (default chunk_length_s / 6). */
  stride_length_s?: number | null;
  return_timestamps?: false | "word" | "char";
}

export declare class LongFormCTC {
  static from_pretrained(model_id: string, options?: LoadOptions): Promise<LongFormCTC & ((audio: Float32Array | number[], options?: LongFormOptions) => Promise<CtcResult>)>;
  readonly sampling_rate: number;
  /** Samples per CTC frame (transformers' inputs_to_logits_ratio). */
  readonly align: number;
  readonly min_samples: number;
  readonly vocab: CtcVocab;
  frameIds(audio: Float32Array, strides?: [number, number] | null): Promise<number[]>;
  spans(n: number, chunk_length_s: number, stride_length_s?: number | null): Array<[number, number, number, number]>;
  result(ids: number[], return_timestamps?: false | "word" | "char"): CtcResult;
  dispose(): Promise<void>;
}

export interface StreamingOptions extends LoadOptions {
  chunk_length_s?: number;
  stride_length_s?: number | null;
  /** A partial hypothesis every this many seconds of new audio (default 1). */
  partial_every_s?: number;
  /** Keep every sample received (audio()), e.g. to check the stream against long-form on the same samples. */
  keep_audio?: boolean;
}

export declare class StreamingCTC extends EventTarget {
  static from_pretrained(model_id: string, options?: StreamingOptions): Promise<StreamingCTC>;
  readonly asr: LongFormCTC;
  reset(options?: StreamingOptions): this;
  /** Frames of any length at any sample rate (resampled to the model's). */
  push(frames: Float32Array | number[], sampleRate?: number): Promise<void>;
  /** Samples received so far, at the model's rate. */
  readonly received: number;
  /** Every sample received (needs keep_audio). */
  audio(): Float32Array;
  /** The rest of the stream; the long-form result of everything pushed. */
  end(): Promise<Required<CtcResult>>;
  addEventListener(type: "partial", listener: (e: CustomEvent<{ text: string; final_text: string }>) => void): void;
  addEventListener(type: "final", listener: (e: CustomEvent<{ words: TimedChunk[]; text: string }>) => void): void;
}

export interface WindowOptions {
  window_s?: number;
  hop_s?: number | null;
  /** EMA weight of the newest window (voxport run --ema); null: the mean of the windows decides. */
  ema?: number | null;
}

export interface LabelScore {
  label: string;
  score: number;
}

export interface WindowTrace {
  start_s: number;
  end_s: number;
  label: string;
  scores: Record<string, number>;
  smoothed_label?: string;
  smoothed?: Record<string, number>;
}

export declare class WindowedClassifier {
  static from_pretrained(model_id: string, options?: LoadOptions): Promise<WindowedClassifier & ((audio: Float32Array | number[], options?: WindowOptions) => Promise<{ labels: LabelScore[]; windows: WindowTrace[]; decision: string }>)>;
  readonly labels: string[];
  probs(audio: Float32Array): Promise<number[]>;
  dispose(): Promise<void>;
}

export declare class SpeakerVerifier {
  static from_pretrained(model_id: string, options?: LoadOptions): Promise<SpeakerVerifier & ((a: Float32Array | number[], b: Float32Array | number[]) => Promise<{ score: number; embeddings: [Float32Array, Float32Array] }>)>;
  embed(audio: Float32Array | number[]): Promise<Float32Array>;
  dispose(): Promise<void>;
}

export declare class CtcVocab {
  static fromFiles(tokenizerJson: object, tokenizerConfig?: object): CtcVocab;
  text(ids: number[]): string;
  words(ids: number[]): Array<[string, number, number]>;
  chars(ids: number[]): Array<[string, number, number]>;
}

export declare class Resampler {
  constructor(from: number, to: number);
  push(frames: Float32Array): Float32Array;
  flush(): Float32Array;
}

export declare function roundHalfEven(x: number): number;
export declare function chunkGeometry(sr: number, align: number, chunk_length_s: number, stride_length_s?: number | null): { chunkLen: number; side: number; step: number };
export declare function chunkSpans(n: number, sr: number, align: number, chunk_length_s: number, stride_length_s?: number | null): Array<[number, number, number, number]>;
export declare function framesKept(n: number, align: number, left: number, right: number): [number, number];
export declare function minSamples(kernels: number[], strides: number[]): number;
export declare function argmaxFrames(data: ArrayLike<number>, vocabSize: number, a: number, b: number): number[];
export declare function softmax(logits: number[]): number[];
export declare function ema(probs: number[][], alpha: number): number[][];
export declare function slidingWindows(n: number, window: number, hop: number): number[];
export declare function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number;

/** getUserMedia -> an AudioWorklet posting every render quantum: onFrames(frames, sampleRate) until stop(). */
export declare function openMicrophone(onFrames: (frames: Float32Array, sampleRate: number) => void,
                                       options?: { audioContext?: AudioContext }): Promise<{ sampleRate: number; stop(): void }>;
