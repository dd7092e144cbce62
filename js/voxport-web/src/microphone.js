// The microphone as a voice app taps it: getUserMedia (no echo cancellation, noise suppression or gain control) ->
// an AudioWorklet that posts every 128-sample render quantum -> onFrames(Float32Array, sampleRate).
export async function openMicrophone(onFrames, { audioContext = null } = {}) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const ctx = audioContext ?? new AudioContext();
  await ctx.audioWorklet.addModule(new URL("./tap-worklet.js", import.meta.url));
  const source = ctx.createMediaStreamSource(stream);
  const tap = new AudioWorkletNode(ctx, "voxport-tap");
  const mute = ctx.createGain();
  mute.gain.value = 0;
  source.connect(tap).connect(mute).connect(ctx.destination);
  tap.port.onmessage = (e) => onFrames(e.data, ctx.sampleRate);
  let open = true;
  return {
    sampleRate: ctx.sampleRate,
    stop() {
      if (!open) return;
      open = false;
      tap.port.onmessage = null;
      source.disconnect();
      stream.getTracks().forEach((t) => t.stop());
      if (!audioContext) ctx.close();
    },
  };
}
