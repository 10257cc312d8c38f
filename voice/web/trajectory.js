// The live trajectory panel: valence and arousal of the session's user turns as a small inline SVG chart.
// One <g class="turn-point" data-turn-id data-label data-policy> per user turn (tests count them), the
// point coloured by the emotion label, the reply's policy written above it. #trajectory-summary (aria-live)
// says the latest turn in words. Colours match `emo-agent plot` (agent/plots.py).

const SVG_NS = "http://www.w3.org/2000/svg";
export const LABEL_COLOURS = {
  angry: "#d62728", disgust: "#8c564b", fear: "#9467bd", happy: "#f2b705", neutral: "#7f7f7f", sad: "#1f77b4",
};
const WIDTH = 600, HEIGHT = 200, LEFT = 44, RIGHT = 16, TOP = 28, BOTTOM = 22;

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

const fmt = (x) => (x >= 0 ? "+" : "") + Number(x).toFixed(2);

export class TrajectoryPanel {
  constructor(svg, summary) {
    this.svg = svg;
    this.summary = summary;
    this.plot = el("g", { class: "plot" });
    this.svg.append(this.plot);
    this.turns = []; // {turnId, label, valence, arousal, policy, interrupted}
  }

  reset() {
    this.turns = [];
    this.summary.textContent = "No turns yet.";
    this.render();
  }

  // A user.perception event.
  addPerception(ev) {
    const emotion = ev.emotion || {};
    this._upsert({ turnId: ev.turn_id, label: emotion.label || "", valence: emotion.valence ?? 0,
      arousal: emotion.arousal ?? 0 });
    const n = this.turns.length;
    this.summary.textContent = `Turn ${n}: ${emotion.label || "unknown"}, valence ${fmt(emotion.valence ?? 0)}, `
      + `arousal ${fmt(emotion.arousal ?? 0)}.`;
  }

  setPolicy(turnId, policy, interrupted = false) {
    const turn = this.turns.find((t) => t.turnId === turnId);
    if (!turn) return;
    turn.policy = policy || turn.policy || "";
    turn.interrupted = turn.interrupted || interrupted;
    this.render();
  }

  // Earlier turns of a resumed session: export rows from GET /sessions/{id}/trajectory, placed before the
  // turns of this connection.
  loadHistory(rows) {
    const known = new Set(this.turns.map((t) => t.turnId));
    const policies = new Map(rows.filter((r) => r.speaker === "assistant").map((r) => [r.turn_id, r]));
    const earlier = rows
      .filter((r) => r.speaker === "user" && r.valence !== null && !known.has(r.turn_id))
      .map((r) => ({ turnId: r.turn_id, label: r.label || "", valence: r.valence, arousal: r.arousal,
        policy: policies.get(r.turn_id)?.policy || "", interrupted: !!policies.get(r.turn_id)?.interrupted }));
    this.turns = [...earlier, ...this.turns];
    if (earlier.length && this.turns.length === earlier.length) {
      this.summary.textContent = `${earlier.length} earlier turns of this session loaded.`;
    }
    this.render();
  }

  _upsert(turn) {
    const existing = this.turns.find((t) => t.turnId === turn.turnId);
    if (existing) Object.assign(existing, turn);
    else this.turns.push({ policy: "", interrupted: false, ...turn });
    this.render();
  }

  render() {
    const plot = el("g", { class: "plot" });
    const n = this.turns.length;
    const span = WIDTH - LEFT - RIGHT;
    const step = n <= 1 ? span : span / (n - 1); // room per turn: full policy names or initials
    const x = (i) => LEFT + (n <= 1 ? span / 2 : (i * span) / (n - 1));
    const y = (v) => TOP + ((1 - Math.max(-1, Math.min(1, v))) / 2) * (HEIGHT - TOP - BOTTOM);
    for (const v of [1, 0, -1]) {
      plot.append(el("line", { class: v === 0 ? "axis zero" : "axis", x1: LEFT, x2: WIDTH - RIGHT, y1: y(v), y2: y(v) }));
      plot.append(el("text", { class: "tick", x: LEFT - 6, y: y(v) + 4, "text-anchor": "end" }, v > 0 ? "+1" : String(v)));
    }
    for (const key of ["valence", "arousal"]) {
      const points = this.turns.map((t, i) => `${x(i).toFixed(1)},${y(t[key]).toFixed(1)}`).join(" ");
      plot.append(el("polyline", { class: `line ${key}`, points, fill: "none" }));
    }
    this.turns.forEach((t, i) => {
      const g = el("g", { class: "turn-point", "data-turn-id": t.turnId, "data-label": t.label,
        "data-policy": t.policy });
      const reply = t.policy ? `; reply policy ${t.policy}${t.interrupted ? " (interrupted)" : ""}` : "";
      g.append(el("title", {}, `Turn ${i + 1}: ${t.label}, valence ${fmt(t.valence)}, arousal ${fmt(t.arousal)}${reply}`));
      g.append(el("circle", { class: "point arousal", cx: x(i), cy: y(t.arousal), r: 3.5 }));
      g.append(el("circle", { class: "point valence", cx: x(i), cy: y(t.valence), r: 5.5,
        fill: LABEL_COLOURS[t.label] || "#bbbbbb" }));
      if (t.policy) {
        g.append(el("text", { class: t.interrupted ? "policy-mark interrupted" : "policy-mark", x: x(i), y: 12,
          "text-anchor": "middle" }, step >= 64 ? t.policy.replace(/_/g, " ") : t.policy[0].toUpperCase()));
      }
      plot.append(g);
    });
    this.plot.replaceWith(plot);
    this.plot = plot;
    this.svg.dataset.turns = String(n);
  }
}
