// AudioWorklet: microphone samples at the context's rate -> PCM16 mono at 16 kHz, posted in
// 20 ms chunks to the page (which sends them as binary WebSocket frames).
class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 16000; // input samples per output sample
    this.pos = 0; // fractional read position into the pending input
    this.pending = new Float32Array(0);
    this.out = new Int16Array(320);
    this.fill = 0;
    this.level = 0;
  }

  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    const buf = new Float32Array(this.pending.length + ch.length);
    buf.set(this.pending);
    buf.set(ch, this.pending.length);
    let peak = 0;
    // Linear interpolation resampler; enough for speech into a 16 kHz model.
    while (this.pos + 1 < buf.length) {
      const i = Math.floor(this.pos);
      const f = this.pos - i;
      const s = buf[i] * (1 - f) + buf[i + 1] * f;
      peak = Math.max(peak, Math.abs(s));
      this.out[this.fill++] = Math.max(-32768, Math.min(32767, Math.round(s * 32767)));
      if (this.fill === this.out.length) {
        this.port.postMessage({ pcm: this.out.buffer, level: this.level }, [this.out.buffer]);
        this.out = new Int16Array(320);
        this.fill = 0;
        this.level = 0;
      }
      this.pos += this.ratio;
    }
    const used = Math.floor(this.pos);
    this.pending = buf.slice(used);
    this.pos -= used;
    this.level = Math.max(this.level, peak);
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
