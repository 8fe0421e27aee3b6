// The microphone tap, on the audio rendering thread: mono 16-bit PCM (s16le) at the
// AudioContext's rate, posted to the page in frames of `frameSamples` (100 ms).
class PcmFramer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frameSamples = options.processorOptions.frameSamples;
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  // The samples of an unfinished frame, then "flushed": the page waits for it at stop.
  flush() {
    if (this.filled > 0) {
      const rest = this.frame.slice(0, this.filled);
      this.port.postMessage(rest.buffer, [rest.buffer]);
      this.filled = 0;
    }
    this.port.postMessage("flushed");
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (let c = 0; c < channels.length; c++) sum += channels[c][i];
      const s = Math.max(-1, Math.min(1, sum / channels.length));
      this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.frameSamples) {
        const full = this.frame;
        this.port.postMessage(full.buffer, [full.buffer]);
        this.frame = new Int16Array(this.frameSamples);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-framer", PcmFramer);
