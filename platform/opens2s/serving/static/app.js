// OpenS2S realtime page: microphone -> AudioWorklet -> PCM16 16 kHz binary frames over the
// WebSocket; JSON events back: streamed text, base64 PCM16 audio played as it arrives.
// State a test (or a curious person) can read lives in window.opens2s.
"use strict";

const $ = (id) => document.getElementById(id);
const state = (window.opens2s = {
  status: "idle",
  events: [],
  errors: [],
  turnsDone: 0,
  audioSamplesReceived: 0,
  buffersPlayed: 0,
  underruns: 0, // chunks that arrived after the audio before them had finished playing
  playedLevelMax: 0,
  micLevelMax: 0,
  lastTtfaMs: null,
  lastServerTtfaMs: null,
  texts: [],
});

let ws = null;
let capture = null; // { ctx, stream, node }
let player = null; // { ctx, analyser, nextTime, lead, inResponse, sources }
// Playout buffer: the first chunk of an answer starts `lead` seconds after it arrives. It starts
// small (time to first audio is the point of streaming) and grows by each underrun's length when
// a chunk arrives after the audio before it has finished (a busy server), up to LEAD_MAX.
const LEAD_MIN = 0.02;
const LEAD_MAX = 0.3;
let turnEndedAt = null;
let firstAudioSeen = false;
let assistantLine = null;
let userLine = null;

function setStatus(s) {
  state.status = s;
  $("status").textContent = s;
}

function log(text) {
  state.events.push(text);
  const el = $("log");
  el.textContent += text + "\n";
  el.scrollTop = el.scrollHeight;
}

function addLine(cls, text) {
  const div = document.createElement("div");
  div.className = "turn " + cls;
  div.textContent = text;
  $("transcript").appendChild(div);
  return div;
}

function wsUrl() {
  const u = new URL("v1/realtime", location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  if (token) u.searchParams.set("token", token);
  return u.toString();
}

async function startPlayer() {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  analyser.connect(ctx.destination);
  player = { ctx, analyser, nextTime: 0, lead: LEAD_MIN, inResponse: false, sources: new Set() };
  const data = new Float32Array(analyser.fftSize);
  const meter = () => {
    if (!player) return;
    analyser.getFloatTimeDomainData(data);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v));
    state.playedLevelMax = Math.max(state.playedLevelMax, peak);
    requestAnimationFrame(meter);
  };
  requestAnimationFrame(meter);
  setInterval(() => {
    if (!player) return;
    analyser.getFloatTimeDomainData(data);
    for (const v of data) state.playedLevelMax = Math.max(state.playedLevelMax, Math.abs(v));
  }, 50);
}

function playPcm16(b64, rate) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const pcm = new Int16Array(bytes.buffer);
  if (pcm.length === 0) return;
  const buf = player.ctx.createBuffer(1, pcm.length, rate);
  const ch = buf.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
  const src = player.ctx.createBufferSource();
  src.buffer = buf;
  src.connect(player.analyser);
  // Chunks are scheduled back to back; a late chunk starts as soon as possible.
  const now = player.ctx.currentTime;
  if (!player.inResponse) {
    player.inResponse = true;
    player.nextTime = now + player.lead;
  } else if (now + LEAD_MIN > player.nextTime) {
    state.underruns += 1;
    player.lead = Math.min(LEAD_MAX, player.lead + (now + LEAD_MIN - player.nextTime));
  }
  const t = Math.max(now + LEAD_MIN, player.nextTime);
  src.start(t);
  player.sources.add(src);
  src.onended = () => {
    player.sources.delete(src);
    state.buffersPlayed += 1;
  };
  player.nextTime = t + buf.duration;
  state.audioSamplesReceived += pcm.length;
  $("audio").textContent = (state.audioSamplesReceived / rate).toFixed(1) + " s";
}

function stopPlayback() {
  if (!player) return;
  // Barge-in: the user talks over the answer, so silence what is playing or queued.
  for (const src of player.sources) {
    src.onended = null;
    src.stop();
  }
  player.sources.clear();
  player.nextTime = player.ctx.currentTime;
}

function onEvent(ev) {
  switch (ev.type) {
    case "session.created":
      setStatus("listening");
      for (const v of ev.voices || []) {
        const o = document.createElement("option");
        o.value = o.textContent = v;
        $("voice").appendChild(o);
      }
      break;
    case "input.speech_started":
      setStatus("hearing you");
      stopPlayback();
      break;
    case "input.speech_stopped":
      turnEndedAt = performance.now();
      firstAudioSeen = false;
      userLine = addLine("user", `(you spoke ${(ev.turn_ms / 1000).toFixed(1)} s)`);
      setStatus("thinking");
      break;
    case "input.transcript":
      if (userLine) userLine.textContent = "you: " + ev.text;
      break;
    case "response.created":
      if (player) player.inResponse = false;
      assistantLine = addLine("assistant", "");
      break;
    case "response.text.delta":
      if (assistantLine) assistantLine.textContent += ev.delta;
      break;
    case "response.audio.delta":
      if (!firstAudioSeen && turnEndedAt !== null) {
        firstAudioSeen = true;
        state.lastTtfaMs = Math.round(performance.now() - turnEndedAt);
        $("ttfa").textContent = state.lastTtfaMs + " ms";
      }
      setStatus("speaking");
      playPcm16(ev.audio, ev.sample_rate);
      break;
    case "response.done":
      if (ev.status === "completed") {
        state.turnsDone += 1;
        state.texts.push(ev.text);
        state.lastServerTtfaMs = ev.ttfa_ms;
        $("sttfa").textContent = ev.ttfa_ms === null ? "–" : ev.ttfa_ms + " ms";
        $("rtf").textContent = ev.rtf === null ? "–" : ev.rtf.toFixed(2);
      }
      setStatus("listening");
      break;
    case "error":
      state.errors.push(ev);
      break;
  }
  if (ev.type !== "response.audio.delta") log(JSON.stringify(ev).slice(0, 200));
}

async function start() {
  setStatus("connecting");
  await startPlayer();
  const stream = await navigator.mediaDevices.getUserMedia({
    // Processing off: the model wants the speech as spoken.
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule(new URL("static/pcm-worklet.js", location.href));
  const node = new AudioWorkletNode(ctx, "pcm-capture");
  ctx.createMediaStreamSource(stream).connect(node);
  capture = { ctx, stream, node };

  ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  ws.onclose = (e) => { setStatus(`closed (${e.code})`); stop(); };
  ws.onerror = () => log("websocket error");
  await new Promise((ok, fail) => { ws.onopen = ok; setTimeout(() => fail(new Error("timeout")), 15000); });
  const voice = $("voice").value;
  if (voice) ws.send(JSON.stringify({ type: "session.update", session: { voice } }));
  node.port.onmessage = (m) => {
    state.micLevelMax = Math.max(state.micLevelMax, m.data.level);
    $("mic").value = m.data.level;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(m.data.pcm);
  };
  $("start").textContent = "Stop";
  $("start").classList.add("on");
}

function stop() {
  if (capture) {
    capture.stream.getTracks().forEach((t) => t.stop());
    capture.ctx.close();
    capture = null;
  }
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
  ws = null;
  $("start").textContent = "Start";
  $("start").classList.remove("on");
}

$("start").onclick = () => {
  if (capture) stop();
  else start().catch((e) => { log("start failed: " + e); state.errors.push({ code: "client", message: String(e) }); setStatus("error"); });
};
$("voice").onchange = () => {
  if (ws && ws.readyState === WebSocket.OPEN)
    ws.send(JSON.stringify({ type: "session.update", session: { voice: $("voice").value || null } }));
};
