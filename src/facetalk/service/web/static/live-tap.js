// The microphone tap of /live: hands each block of input samples to the page.
class Tap extends AudioWorkletProcessor {
  process(inputs) {
    if (inputs[0][0]) this.port.postMessage(inputs[0][0]);
    return true;
  }
}
registerProcessor("tap", Tap);
