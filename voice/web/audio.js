// Microphone capture (AudioWorklet → 16 kHz Int16 frames) and gapless playback of reply PCM.

export const CAPTURE_RATE = 16000;

/** Captures the microphone; calls onFrame(ArrayBuffer of Int16 PCM at 16 kHz) every 20 ms. */
export class Microphone {
  constructor(context, onFrame) {
    this.context = context;
    this.onFrame = onFrame;
    this.stream = null;
    this.node = null;
    this.source = null;
  }

  async start() {
    await this.context.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    this.source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, "pcm-downsampler", {
      numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: "explicit",
    });
    this.node.port.onmessage = (e) => this.onFrame(e.data);
    this.source.connect(this.node);
  }

  stop() {
    if (this.node) { this.node.port.postMessage("stop"); this.node.disconnect(); }
    if (this.source) this.source.disconnect();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.node = this.source = this.stream = null;
  }
}

/** Plays PCM16 chunks back to back; stop() silences everything scheduled at once. */
export class Player {
  constructor(context) {
    this.context = context;
    this.sampleRate = 22050;
    this.nextTime = 0;
    this.sources = new Set();
  }

  get playing() {
    return this.sources.size > 0;
  }

  /** Queue one chunk of Int16 little-endian mono PCM at this.sampleRate. */
  enqueue(arrayBuffer) {
    const pcm = new Int16Array(arrayBuffer);
    if (pcm.length === 0) return;
    const buffer = this.context.createBuffer(1, pcm.length, this.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    // A little headroom after an underrun so the next chunks join without gaps.
    const now = this.context.currentTime;
    if (this.nextTime < now + 0.02) this.nextTime = now + 0.06;
    source.start(this.nextTime);
    this.nextTime += buffer.duration;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
  }

  stop() {
    for (const source of this.sources) {
      try { source.stop(); } catch { /* already stopped */ }
    }
    this.sources.clear();
    this.nextTime = 0;
  }
}
