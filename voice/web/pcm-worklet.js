// AudioWorklet: microphone audio at the context's rate → 16 kHz mono Int16 PCM frames of 20 ms.
// A biquad low-pass (Butterworth, ~7 kHz) removes what 16 kHz cannot carry, then linear interpolation
// picks samples at 16 kHz. Frames are posted to the main thread as transferable ArrayBuffers.

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 320; // 20 ms at 16 kHz

class PcmDownsampler extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.pos = 0; // position of the next output sample, in input samples relative to `prev`
    this.prev = 0;
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.fill = 0;
    this.active = true;
    this.port.onmessage = (e) => { if (e.data === "stop") this.active = false; };
    // Low-pass coefficients (RBJ cookbook), skipped when the input already is 16 kHz.
    const fc = Math.min(7200, sampleRate * 0.45);
    const w0 = (2 * Math.PI * fc) / sampleRate;
    const alpha = Math.sin(w0) / (2 * Math.SQRT1_2);
    const a0 = 1 + alpha;
    this.b0 = (1 - Math.cos(w0)) / 2 / a0;
    this.b1 = (1 - Math.cos(w0)) / a0;
    this.b2 = this.b0;
    this.a1 = (-2 * Math.cos(w0)) / a0;
    this.a2 = (1 - alpha) / a0;
    this.x1 = this.x2 = this.y1 = this.y2 = 0;
    this.filter = sampleRate > TARGET_RATE;
  }

  lowpass(x) {
    if (!this.filter) return x;
    const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2 - this.a1 * this.y1 - this.a2 * this.y2;
    this.x2 = this.x1; this.x1 = x; this.y2 = this.y1; this.y1 = y;
    return y;
  }

  push(sample) {
    const s = Math.max(-1, Math.min(1, sample));
    this.frame[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.fill === FRAME_SAMPLES) {
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Int16Array(FRAME_SAMPLES);
      this.fill = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!this.active) return false;
    if (!input || input.length === 0) return true;
    const channel = input[0];
    for (let i = 0; i < channel.length; i++) {
      const x = this.lowpass(channel[i]);
      // Emit every output sample that falls between the previous input sample and this one.
      while (this.pos <= 1) {
        this.push(this.prev + (x - this.prev) * this.pos);
        this.pos += this.step;
      }
      this.pos -= 1;
      this.prev = x;
    }
    return true;
  }
}

registerProcessor("pcm-downsampler", PcmDownsampler);
