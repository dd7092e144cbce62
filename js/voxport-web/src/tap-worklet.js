// Sends every 128-sample render quantum of the microphone to the page (first channel), as a voice app's worklet does.
class Tap extends AudioWorkletProcessor {
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch && ch.length) this.port.postMessage(ch.slice(0));
    return true;
  }
}
registerProcessor("voxport-tap", Tap);
