// The voice page: one websocket session, microphone streaming, typed turns, reply playback, turn cards.
// Protocol: docs/voice.md. Element ids and data-* attributes are stable (tests wait on them):
//   #turns > li.turn[data-turn-id][data-state="perceived|replying|done|interrupted"]
//   #start (microphone on/off, data-state), #session-id[data-session-id], #connection[data-connection], #vad[data-vad], #errors > li[data-code]
//   #consent[data-consent="true|false"], #trajectory-chart[data-turns] > g.turn-point[data-turn-id] (trajectory.js)
//   #errors > li[data-kind="warning"] (warning events), #token-form[hidden] (shown when a connection fails
//   before its session started: the server may want an access token)
// Access token (docs/voice.md, "Security"): open the page as /#token=TOKEN once; it is kept in localStorage,
// taken out of the address bar, offered as the websocket subprotocol emo-agent.token.TOKEN (browsers cannot
// set headers on a WebSocket) and sent as Authorization: Bearer on the page's own fetches.

import { CAPTURE_RATE, Microphone, Player } from "./audio.js";
import { TrajectoryPanel } from "./trajectory.js";

const SESSION_KEY = "emo-agent.session-id";
const TOKEN_KEY = "emo-agent.token";
const SUBPROTOCOL = "emo-agent";
// Characters a Sec-WebSocket-Protocol value may hold (an RFC 7230 token); others go in ?access_token=.
const SUBPROTOCOL_SAFE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const $ = (id) => document.getElementById(id);

const ui = {
  mic: $("start"), flush: $("flush-button"), vad: $("vad"), form: $("text-form"), input: $("text-input"),
  sessionId: $("session-id"), connection: $("connection"), newSession: $("new-session-button"),
  errors: $("errors"), turns: $("turns"), template: $("turn-template"), consent: $("consent"),
  tokenForm: $("token-form"), tokenInput: $("token-input"),
};
const trajectory = new TrajectoryPanel($("trajectory-chart"), $("trajectory-summary"));

let ws = null;
let context = null;
let player = null;
let mic = null;
let started = false;
let acceptAudio = false; // false after an interruption until the next turn's perception
let currentTurn = null;
let outputRate = 22050; // from session.started
const pending = []; // messages sent before session.started
// Counters for tests and curious users (window.emoAgent.stats).
const stats = { turns: 0, replySamplesReceived: 0, framesSent: 0, interruptions: 0 };

function audioContext() {
  if (!context) {
    context = new AudioContext();
    player = new Player(context);
  }
  if (context.state === "suspended") context.resume();
  return context;
}

// ------------------------------------------------------------------------------------------- access

// A token given as #token=... is kept and removed from the address bar (and so from history and bookmarks).
function takeTokenFromUrl() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (!params.has("token")) return;
  const token = params.get("token").trim();
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

function accessToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  const token = accessToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// ------------------------------------------------------------------------------------------- socket

function connect() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = accessToken();
  const protocols = [];
  if (token && SUBPROTOCOL_SAFE.test(token)) protocols.push(SUBPROTOCOL, `${SUBPROTOCOL}.token.${token}`);
  else if (token) url.searchParams.set("access_token", token);
  ws = protocols.length ? new WebSocket(url, protocols) : new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const socket = ws;
  setConnection("connecting", "Connecting…");
  ws.onopen = () => {
    const start = { type: "session.start", sample_rate: CAPTURE_RATE };
    const stored = localStorage.getItem(SESSION_KEY);
    if (stored) start.session_id = stored;
    ws.send(JSON.stringify(start));
  };
  ws.onmessage = (e) => (typeof e.data === "string" ? onEvent(JSON.parse(e.data)) : onAudio(e.data));
  ws.onclose = (e) => {
    const neverStarted = !started;
    started = false;
    setConnection("closed", "Disconnected");
    stopMic();
    // 1006 before any session: the handshake was refused (a missing or wrong token, a foreign origin) or
    // the server is not there. The browser does not say which, so offer to enter a token.
    if (neverStarted && e.code === 1006 && socket === ws) {
      ui.tokenForm.hidden = false;
      showError("connection", token ? "could not connect: is the access token right?" : "could not connect");
    }
  };
}

function send(message) {
  const data = typeof message === "string" || message instanceof ArrayBuffer ? message : JSON.stringify(message);
  if (ws && ws.readyState === WebSocket.OPEN && started) ws.send(data);
  else if (!(data instanceof ArrayBuffer)) pending.push(data);
}

function setConnection(state, text) {
  ui.connection.dataset.connection = state;
  ui.connection.textContent = text;
}

// ------------------------------------------------------------------------------------------- events

function onEvent(ev) {
  switch (ev.type) {
    case "session.started":
      started = true;
      localStorage.setItem(SESSION_KEY, ev.session_id);
      ui.sessionId.textContent = ev.session_id;
      ui.sessionId.dataset.sessionId = ev.session_id;
      setConnection("open", ev.resumed ? "Connected (resumed)" : "Connected");
      ui.tokenForm.hidden = true;
      outputRate = ev.output_sample_rate;
      showConsent(ev.consent);
      if (ev.resumed && ev.consent !== false) loadHistory(ev.session_id);
      while (pending.length) ws.send(pending.shift());
      break;
    case "speech.started":
      ui.vad.dataset.vad = "speech";
      // A cue only: playback stops on assistant.interrupted, once the server has decided it is a barge-in
      // (barge_in_ms of speech), so a short noise does not silence a reply the server counts as heard.
      ui.vad.textContent = player && player.playing ? "Hearing you… (keep talking to interrupt)" : "Hearing you…";
      break;
    case "speech.stopped":
      ui.vad.dataset.vad = "silence";
      ui.vad.textContent = mic ? "Listening" : "Not listening";
      break;
    case "user.perception":
      currentTurn = addTurn(ev);
      trajectory.addPerception(ev);
      stats.turns += 1;
      acceptAudio = true;
      break;
    case "assistant.delta": {
      const card = turnCard(ev.turn_id);
      if (card) {
        card.dataset.state = "replying";
        field(card, "reply").textContent += ev.text;
        field(card, "status").textContent = "Speaking…";
      }
      break;
    }
    case "assistant.text": {
      const card = turnCard(ev.turn_id);
      if (card) {
        if (card.dataset.state !== "interrupted") card.dataset.state = "replying";
        field(card, "reply").textContent = ev.text;
        field(card, "policy").textContent = ev.policy;
      }
      trajectory.setPolicy(ev.turn_id, ev.policy);
      break;
    }
    case "assistant.done": {
      const card = turnCard(ev.turn_id);
      if (card) {
        card.dataset.state = "done";
        field(card, "status").textContent = "Done";
      }
      break;
    }
    case "assistant.interrupted": {
      stats.interruptions += 1;
      trajectory.setPolicy(ev.turn_id, "", true);
      if (player) player.stop();
      acceptAudio = false;
      const card = turnCard(ev.turn_id);
      if (card) {
        card.dataset.state = "interrupted";
        const heard = field(card, "heard");
        heard.hidden = false;
        heard.textContent = ev.heard_text ? `You heard: “${ev.heard_text}”` : "Interrupted before you heard anything.";
        field(card, "status").textContent = "Interrupted";
      }
      break;
    }
    case "error":
      showError(ev.code, ev.message);
      break;
    case "warning":
      showError(ev.code, ev.message, "warning");
      break;
    default:
      break;
  }
}

function showConsent(consent) {
  ui.consent.dataset.consent = consent === undefined ? "" : String(consent);
  ui.consent.textContent = consent === false ? "Research log: off" : consent ? "Research log: on" : "Research log: —";
}

// Earlier turns of a resumed session, from the server's trajectory log (404 when nothing was logged).
async function loadHistory(sessionId) {
  try {
    const url = new URL(`sessions/${encodeURIComponent(sessionId)}/trajectory`, location.href);
    const response = await fetch(url, { headers: authHeaders() });
    if (!response.ok) return;
    const body = await response.json();
    if (ui.sessionId.dataset.sessionId === sessionId) trajectory.loadHistory(body.turns || []);
  } catch (err) {
    console.debug("no trajectory history", err);
  }
}

function onAudio(buffer) {
  stats.replySamplesReceived += buffer.byteLength / 2;
  if (!acceptAudio || !context) return;
  player.sampleRate = outputRate;
  player.enqueue(buffer);
}

// ------------------------------------------------------------------------------------------- turn cards

function turnCard(turnId) {
  return ui.turns.querySelector(`li.turn[data-turn-id="${CSS.escape(turnId)}"]`);
}

function field(card, name) {
  return card.querySelector(`[data-field="${name}"]`);
}

function fmt(x) {
  return (x >= 0 ? "+" : "") + Number(x).toFixed(2);
}

function addTurn(ev) {
  const card = ui.template.content.firstElementChild.cloneNode(true);
  card.dataset.turnId = ev.turn_id;
  card.dataset.state = "perceived";
  const emotion = ev.emotion || {};
  field(card, "transcript").textContent = ev.transcript || "(nothing transcribed)";
  field(card, "label").textContent = emotion.label || "";
  field(card, "valence").textContent = fmt(emotion.valence ?? 0);
  field(card, "arousal").textContent = fmt(emotion.arousal ?? 0);
  const scores = field(card, "scores");
  const top = Object.entries(emotion.scores || {}).sort((a, b) => b[1] - a[1]).slice(0, 4);
  for (const [label, score] of top) {
    const li = document.createElement("li");
    li.dataset.label = label;
    const name = document.createElement("span");
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", String(Math.round(score * 100)));
    bar.setAttribute("aria-label", `${label} score`);
    const fill = document.createElement("span");
    fill.style.width = `${Math.round(score * 100)}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.textContent = `${Math.round(score * 100)}%`;
    li.append(name, bar, value);
    scores.append(li);
  }
  field(card, "reasoning").textContent = ev.reasoning || "";
  const evidence = field(card, "evidence");
  for (const item of ev.evidence || []) {
    const li = document.createElement("li");
    li.dataset.kind = item.kind;
    const what = item.kind === "lexical" ? `“${item.quote}”` : `${item.cue} = ${Number(item.value).toFixed(2)}`;
    li.textContent = `${item.kind}: ${what} — ${item.claim}`;
    evidence.append(li);
  }
  ui.turns.prepend(card);
  return card;
}

function showError(code, message, kind = "error") {
  const li = document.createElement("li");
  li.dataset.code = code;
  li.dataset.kind = kind;
  li.textContent = `${code}: ${message}`;
  ui.errors.prepend(li);
  while (ui.errors.children.length > 5) ui.errors.lastElementChild.remove();
}

// ------------------------------------------------------------------------------------------- controls

async function startMic() {
  try {
    mic = new Microphone(audioContext(), (frame) => {
      stats.framesSent += 1;
      send(frame);
    });
    await mic.start();
    ui.mic.dataset.state = "on";
    ui.mic.setAttribute("aria-pressed", "true");
    ui.mic.textContent = "Stop microphone";
    ui.flush.disabled = false;
    ui.vad.textContent = "Listening";
  } catch (err) {
    mic = null;
    showError("microphone", err.message || String(err));
  }
}

function stopMic() {
  if (mic) mic.stop();
  mic = null;
  ui.mic.dataset.state = "off";
  ui.mic.setAttribute("aria-pressed", "false");
  ui.mic.textContent = "Start microphone";
  ui.flush.disabled = true;
  ui.vad.dataset.vad = "silence";
  ui.vad.textContent = "Not listening";
}

ui.mic.addEventListener("click", () => (mic ? stopMic() : startMic()));
ui.flush.addEventListener("click", () => send({ type: "input.flush" }));
ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.input.value.trim();
  if (!text) return;
  audioContext();
  if (player && player.playing) player.stop();
  send({ type: "input.text", text });
  ui.input.value = "";
});
ui.tokenForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const token = ui.tokenInput.value.trim();
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  ui.tokenInput.value = "";
  ui.tokenForm.hidden = true;
  if (ws) { ws.onclose = null; ws.close(); }
  connect();
});
ui.newSession.addEventListener("click", () => {
  localStorage.removeItem(SESSION_KEY);
  stopMic();
  if (player) player.stop();
  ui.turns.replaceChildren();
  trajectory.reset();
  if (ws) { ws.onclose = null; ws.close(); }
  started = false;
  connect();
});

window.emoAgent = {
  stats,
  get sessionId() { return ui.sessionId.dataset.sessionId; },
  get currentTurn() { return currentTurn; },
};
takeTokenFromUrl();
connect();
