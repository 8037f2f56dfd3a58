// depscreen page: camera + microphone → WHIP (POST /whip, trickled candidates by PATCH, DELETE to end);
// the server's updates arrive on the "depscreen" data channel as JSON ServerMessages and are drawn here.
"use strict";

const MODALITIES = [["AUDIO", "Audio (voice)"], ["VIDEO", "Video (face)"], ["TEXT", "Text (words)"]];
const SYMPTOMS = [
  ["ANHEDONIA", "Little interest or pleasure"],
  ["DEPRESSED_MOOD", "Feeling down or hopeless"],
  ["SLEEP", "Sleep problems"],
  ["FATIGUE", "Tired, little energy"],
  ["APPETITE", "Appetite changes"],
  ["WORTHLESSNESS", "Feeling bad about oneself"],
  ["CONCENTRATION", "Trouble concentrating"],
  ["PSYCHOMOTOR", "Moving or speaking slowly, or restless"],
];
const SUMMARY_WAIT_MS = 15000;

const $ = (id) => document.getElementById(id);
const percent = (x) => `${Math.round((x || 0) * 100)}%`;

let session = null;

function setConnection(text) {
  $("connection").textContent = text;
}

function showError(text) {
  const error = $("error");
  error.textContent = text;
  error.hidden = !text;
}

function bar(label, fraction, valueText, unavailable) {
  const item = document.createElement("li");
  if (unavailable) item.className = "unavailable";
  const name = document.createElement("span");
  name.textContent = label;
  const track = document.createElement("div");
  track.className = "track";
  track.setAttribute("role", "meter");
  track.setAttribute("aria-label", label);
  track.setAttribute("aria-valuemin", "0");
  track.setAttribute("aria-valuemax", "100");
  track.setAttribute("aria-valuenow", String(Math.round((fraction || 0) * 100)));
  track.setAttribute("aria-valuetext", valueText);
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
  track.append(fill);
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = valueText;
  item.append(name, track, value);
  return item;
}

function intervalText(estimate) {
  // proto3 JSON leaves out defaults: a missing interval_low is 0, a missing enough_speech false
  if (!estimate.enough_speech) return "not enough speech yet";
  if (!estimate.interval_level) return "none (the model has no interval calibration)";
  return `${percent(estimate.interval_level)} interval ` +
    `${percent(estimate.interval_low || 0)}–${percent(estimate.interval_high || 0)}`;
}

function drawEstimate(estimate) {
  // proto3 JSON leaves out zeros, so a real estimate is recognised by its modality list, not its probability
  const scored = Boolean(estimate.modalities);
  $("probability").textContent = scored ? percent(estimate.probability) : "–";
  $("evidence").textContent = scored ? percent(estimate.evidence) : "–";
  $("interval").textContent = scored ? intervalText(estimate) : "–";
  const byModality = new Map((estimate.modalities || []).map((m) => [m.modality, m]));
  $("modalities").replaceChildren(...MODALITIES.map(([key, label]) => {
    const m = byModality.get(key) || {};
    return m.available
      ? bar(label, m.weight, `${percent(m.weight)}`, false)
      : bar(label, 0, "not available", true);
  }));
  const byItem = new Map((estimate.symptoms || []).map((s) => [s.item, s.score || 0]));
  $("symptoms").replaceChildren(...SYMPTOMS.map(([key, label]) => {
    const score = byItem.get(key) || 0;
    return bar(label, score, score.toFixed(2), false);
  }));
}

function drawChart(history) {
  const width = 600;
  const top = 10;
  const bottom = 190;
  const step = history.length > 1 ? width / (history.length - 1) : 0;
  const points = history.map((p, i) => [history.length > 1 ? i * step : width / 2, bottom - p * (bottom - top)]);
  $("chart-line").setAttribute("points", points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  $("chart-points").replaceChildren(...points.map(([x, y]) => {
    const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    dot.setAttribute("cx", x.toFixed(1));
    dot.setAttribute("cy", y.toFixed(1));
    dot.setAttribute("r", "3");
    return dot;
  }));
  $("chart-desc").textContent = history.length
    ? `Probability after each of ${history.length} sentences: ${history.map(percent).join(", ")}.`
    : "No sentences yet.";
}

function clock(ms) {
  const seconds = Number(ms || 0) / 1000;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

function onSentence(sentence) {
  const index = (sentence.index || 0) + 1;
  session.history.push(sentence.estimate.probability || 0);
  drawEstimate(sentence.estimate);
  drawChart(session.history);
  $("sentences").textContent = String(session.history.length);
  const item = document.createElement("li");
  item.value = index;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${clock(sentence.start_ms)}–${clock(sentence.end_ms)} `;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = sentence.transcript || "(no words recognised)";
  const source = document.createElement("span");
  source.className = "source";
  source.textContent = sentence.transcript_source ? ` · ${sentence.transcript_source}` : "";
  item.append(time, text, source);
  $("transcript").append(item);
  item.scrollIntoView({ block: "nearest" });
  $("latest").textContent =
    `Sentence ${index}: probability ${percent(sentence.estimate.probability)}, ` +
    `evidence ${percent(sentence.estimate.evidence)}, ${intervalText(sentence.estimate)}.`;
}

function onSummary(summary) {
  if (summary.estimate) drawEstimate(summary.estimate);
  const rows = [
    ["Sentences", String(summary.sentences || 0)],
    ["Audio", `${(summary.audio_seconds || 0).toFixed(1)} s`],
    ["Speech", `${(summary.speech_seconds || 0).toFixed(1)} s`],
    ["Final probability", summary.estimate ? percent(summary.estimate.probability) : "–"],
    ["Evidence", summary.estimate ? percent(summary.estimate.evidence) : "–"],
    ["Interval", summary.estimate ? intervalText(summary.estimate) : "not enough speech yet"],
  ];
  $("summary").replaceChildren(...rows.map(([term, value]) => {
    const row = document.createElement("div");
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    row.append(dt, dd);
    return row;
  }));
  $("summary-section").hidden = false;
  $("latest").textContent = `Session ended after ${summary.sentences || 0} sentences.`;
}

function onMessage(event) {
  const message = JSON.parse(event.data);
  if (message.accepted) {
    const model = message.accepted.model || {};
    $("model").textContent = `Model ${model.model_id} (${model.trained_on || "training data not stated"}).`;
  } else if (message.sentence) {
    onSentence(message.sentence);
  } else if (message.summary) {
    onSummary(message.summary);
    session.summaryReceived();
  }
}

function linkedIceServers(response) {
  // RFC 9725 section 4.6: Link: <stun:host:port>; rel="ice-server"[; username="u"; credential="c"]
  const servers = [];
  for (const link of (response.headers.get("Link") || "").split(/,(?=\s*<)/)) {
    const url = /<([^>]+)>/.exec(link);
    if (!url || !/rel="?ice-server"?/.test(link)) continue;
    const server = { urls: url[1] };
    const username = /username="([^"]*)"/.exec(link);
    const credential = /credential="([^"]*)"/.exec(link);
    if (username) server.username = username[1];
    if (credential) server.credential = credential[1];
    servers.push(server);
  }
  return servers;
}

function candidateFragment(offer, candidate) {
  const ufrag = /a=ice-ufrag:(.*)/.exec(offer.sdp)[1].trim();
  const pwd = /a=ice-pwd:(.*)/.exec(offer.sdp)[1].trim();
  const mid = candidate ? candidate.sdpMid : "0";
  const media = /m=(\w+) /.exec(offer.sdp)[1];
  const line = candidate ? `a=${candidate.candidate}` : "a=end-of-candidates";
  return `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\nm=${media} 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:${mid}\r\n${line}\r\n`;
}

async function start() {
  showError("");
  $("start").disabled = true;
  $("transcript").replaceChildren();
  $("summary-section").hidden = true;
  setConnection("asking for camera and microphone…");
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: true, video: $("camera").checked });
  } catch (error) {
    showError(`Camera or microphone unavailable: ${error.message}. Allow access and try again.`);
    setConnection("not started");
    $("start").disabled = false;
    return;
  }
  $("preview").srcObject = media;
  $("preview").classList.add("live");

  const pc = new RTCPeerConnection({ iceServers: [] });
  let resolveSummary;
  session = {
    pc, media, resource: null, history: [],
    summary: new Promise((resolve) => { resolveSummary = resolve; }),
    summaryReceived: () => resolveSummary(),
  };
  drawChart([]);
  const channel = pc.createDataChannel("depscreen");
  channel.onmessage = onMessage;
  pc.onconnectionstatechange = () => {
    const state = pc.connectionState;
    setConnection({ new: "connecting…", connecting: "connecting…", connected: "live", disconnected: "interrupted",
      failed: "failed", closed: "ended" }[state] || state);
    if (state === "failed") showError("The connection to the server failed. Check the network and start again.");
  };
  for (const track of media.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });

  try {
    const offer = await pc.createOffer();
    const language = encodeURIComponent($("language").value.trim() || "en");
    setConnection("offering…");
    const response = await fetch(`/whip?language=${language}`, {
      method: "POST", headers: { "Content-Type": "application/sdp" }, body: offer.sdp,
    });
    if (response.status !== 201) throw new Error(`${response.status} ${(await response.text()).trim()}`);
    session.resource = new URL(response.headers.get("Location"), location.href).href;
    const answer = await response.text();
    pc.setConfiguration({ iceServers: linkedIceServers(response) });
    let patches = Promise.resolve();  // in order: end-of-candidates must come last
    pc.onicecandidate = (event) => {
      const body = candidateFragment(offer, event.candidate);
      patches = patches.then(() => fetch(session.resource, {
        method: "PATCH", headers: { "Content-Type": "application/trickle-ice-sdpfrag" }, body,
      }));
    };
    await pc.setLocalDescription(offer);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    $("stop").disabled = false;
  } catch (error) {
    showError(`The server did not accept the session: ${error.message}`);
    finish();
  }
}

async function stop() {
  $("stop").disabled = true;
  setConnection("ending…");
  const current = session;
  if (current.resource) {
    await fetch(current.resource, { method: "DELETE" });
    await Promise.race([current.summary, new Promise((resolve) => setTimeout(resolve, SUMMARY_WAIT_MS))]);
  }
  finish();
}

function finish() {
  if (session) {
    session.pc.close();
    for (const track of session.media.getTracks()) track.stop();
  }
  $("preview").srcObject = null;
  $("preview").classList.remove("live");
  setConnection("ended");
  $("stop").disabled = true;
  $("start").disabled = false;
}

window.addEventListener("DOMContentLoaded", () => {
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    start();
  });
  $("stop").addEventListener("click", stop);
  window.addEventListener("pagehide", () => {
    if (session && session.resource && session.pc.connectionState !== "closed") {
      fetch(session.resource, { method: "DELETE", keepalive: true });
    }
  });
  drawEstimate({});
  drawChart([]);
});
