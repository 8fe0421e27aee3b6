// whisperwire's browser page: the native WebSocket protocol (docs/protocol.md) from a
// microphone (an AudioWorklet, 100 ms frames of s16le) or an audio file (a clip).
// Every text that comes from the server goes into the DOM as text (textContent or text
// nodes), never as HTML.
"use strict";

const RATE = 16000; // what the server decodes at; the AudioContext resamples the microphone
// Whisper's languages, for a multilingual model (the greeting says "all").
const WHISPER_LANGUAGES = (
  "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no " +
  "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw " +
  "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl " +
  "mg as tt haw ln ha ba jw su yue"
).split(" ");

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  language: $("language"),
  translate: $("translate"),
  keyField: $("key-field"),
  token: $("token"),
  connect: $("connect"),
  mic: $("mic"),
  file: $("file"),
  clipState: $("clip-state"),
  errors: $("errors"),
  transcript: $("transcript"),
  partial: $("partial"),
  copy: $("copy"),
  download: $("download"),
  clear: $("clear"),
  serverInfo: $("server-info"),
};

let ws = null; // the current WebSocket
let opened = null; // a promise of the session's greeting (its config)
let greeted = null; // {resolve, reject} of `opened`
let config = null; // the greeting's config: model, languages, max_message_bytes…
let sessionRate = null; // the sample_rate sent in this session's config, once audio started
let mic = null; // {ctx, stream, source, node} while the microphone runs
let clipCount = 0;
const clips = new Map(); // audio_id -> file name, while a clip is in flight
const entries = []; // the transcript: {kind: "final", text} or {kind: "clip", name, text}
const chosen = {}; // the language and task the person picked: kept across reconnections

// ------------------------------------------------------------------ display

function setState(state, text) {
  ui.state.dataset.state = state;
  ui.state.textContent = text;
}

function showError(code, message) {
  const item = document.createElement("li");
  const label = document.createElement("code");
  label.textContent = code;
  item.append(label, document.createTextNode(message || ""));
  ui.errors.append(item);
  while (ui.errors.children.length > 5) ui.errors.firstElementChild.remove();
}

function scrolledToEnd() {
  const box = ui.transcript;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}

function keepInView(wasAtEnd) {
  if (wasAtEnd) ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function afterFinal() {
  return entries.length > 0 && entries[entries.length - 1].kind === "final";
}

function addFinal(text) {
  text = String(text || "").trim();
  if (!text) return;
  const atEnd = scrolledToEnd();
  const span = document.createElement("span");
  span.className = "final";
  span.textContent = (afterFinal() ? " " : "") + text;
  ui.transcript.insertBefore(span, ui.partial);
  ui.partial.textContent = "";
  entries.push({ kind: "final", text });
  keepInView(atEnd);
}

function addClip(name, text) {
  const atEnd = scrolledToEnd();
  const block = document.createElement("span");
  block.className = "clip";
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  block.append(label, document.createTextNode(String(text || "").trim()));
  ui.transcript.insertBefore(block, ui.partial);
  entries.push({ kind: "clip", name, text: String(text || "").trim() });
  keepInView(atEnd);
}

function showPartial(text) {
  const atEnd = scrolledToEnd();
  const before = afterFinal() ? " " : "";
  ui.partial.textContent = text ? before + String(text).trim() : "";
  keepInView(atEnd);
}

function transcriptText() {
  const out = [];
  let line = [];
  for (const entry of entries) {
    if (entry.kind === "final") {
      line.push(entry.text);
      continue;
    }
    if (line.length) out.push(line.join(" "));
    line = [];
    out.push(`[${entry.name}]`, entry.text);
  }
  if (line.length) out.push(line.join(" "));
  return out.join("\n") + (out.length ? "\n" : "");
}

function fillLanguages(cfg) {
  const codes = cfg.languages === "all" ? ["auto", ...WHISPER_LANGUAGES] : cfg.languages;
  let names = null;
  try {
    names = new Intl.DisplayNames([navigator.language || "en"], { type: "language" });
  } catch {
    names = null;
  }
  ui.language.replaceChildren();
  for (const code of codes) {
    const option = document.createElement("option");
    option.value = code;
    let name = code === "auto" ? "detect" : code;
    try {
      if (names && code !== "auto") name = `${names.of(code)} (${code})`;
    } catch {
      name = code;
    }
    option.textContent = name;
    ui.language.append(option);
  }
  ui.language.value = codes.includes(chosen.language) ? chosen.language : cfg.language;
  ui.language.disabled = codes.length < 2;
  const englishOnly = codes.length === 1 && codes[0] === "en"; // an .en model
  ui.translate.disabled = englishOnly;
  ui.translate.title = englishOnly ? "an English-only model: nothing to translate" : "";
  ui.translate.checked = (chosen.task || cfg.task) === "translate";
}

// ------------------------------------------------------------------ the connection

function socketUrl() {
  const url = new URL(".", location.href); // the page's path: works behind a path prefix
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  const token = ui.token.value.trim();
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function connected() {
  return ws !== null && ws.readyState === WebSocket.OPEN && config !== null;
}

// Opens a session (once: no automatic retries, so a server with --api-key never counts
// failed attempts the person did not make). Resolves with the greeting's config.
function connect() {
  if (ws !== null && ws.readyState <= WebSocket.OPEN) return opened;
  config = null;
  sessionRate = null;
  setState("connecting", "connecting…");
  ui.keyField.classList.remove("key-needed");
  opened = new Promise((resolve, reject) => {
    greeted = { resolve, reject };
  });
  opened.catch(() => {}); // a caller that does not wait for it must not leave it unhandled
  let socket;
  try {
    socket = new WebSocket(socketUrl());
  } catch (err) {
    setState("error", "cannot connect");
    showError("CONNECTION", String(err.message || err));
    greeted.reject(err);
    return opened;
  }
  ws = socket;
  socket.binaryType = "arraybuffer";
  socket.onmessage = (event) => {
    if (socket === ws) receive(event.data);
  };
  socket.onclose = (event) => {
    if (socket === ws) closed(event);
  };
  return opened;
}

function send(message) {
  if (ws !== null && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function sendSettings() {
  if (!connected()) return;
  if (ui.language.value === config.language && currentTask() === config.task) return;
  const message = { type: "config" };
  if (ui.language.value) message.language = ui.language.value;
  if (!ui.translate.disabled) message.task = currentTask();
  send(message);
}

function currentTask() {
  return ui.translate.checked && !ui.translate.disabled ? "translate" : "transcribe";
}

function choose() {
  chosen.language = ui.language.value;
  chosen.task = currentTask();
  sendSettings();
}

function describe(cfg) {
  return `${cfg.model} · ${cfg.language} · ${cfg.task}`;
}

function receive(data) {
  if (typeof data !== "string") return;
  let m;
  try {
    m = JSON.parse(data);
  } catch {
    showError("PAGE", "the server sent something that is not JSON");
    return;
  }
  switch (m.type) {
    case "state":
      onState(m);
      break;
    case "partial":
      showPartial(m.text);
      break;
    case "final":
      addFinal(m.text);
      break;
    case "transcription": {
      const name = clips.get(m.audio_id) || String(m.audio_id || "clip");
      addClip(name, m.transcription);
      break;
    }
    case "error":
      onError(m);
      break;
    case "end":
      showPartial("");
      break;
    default:
      break; // forward, and whatever a newer server adds
  }
}

function onState(m) {
  if (m.state === "ready" && m.session_id && m.config) {
    config = m.config;
    fillLanguages(config);
    setState("open", mic ? "listening" : "connected");
    ui.serverInfo.textContent = `Model ${config.model}.`;
    ui.connect.textContent = "Reconnect";
    sendSettings(); // the person's earlier choice, after a reconnection
    greeted.resolve(config);
    return;
  }
  if (m.state === "configured" && m.config) {
    config = { ...config, ...m.config };
    return;
  }
  if (m.audio_id !== undefined && clips.has(m.audio_id)) {
    const name = clips.get(m.audio_id);
    if (m.state === "processing") {
      const share = typeof m.progress === "number" ? ` ${Math.round(m.progress * 100)} %` : "";
      const queued = m.queued ? ` (${m.queued} before it)` : "";
      ui.clipState.textContent = `${name}: transcribing…${share}${queued}`;
    } else if (m.state === "ready") {
      clips.delete(m.audio_id);
      ui.clipState.textContent = clips.size ? ui.clipState.textContent : "";
    }
  }
}

function onError(m) {
  const name = m.audio_id !== undefined ? clips.get(m.audio_id) : undefined;
  let message = String(m.message || "");
  if (name !== undefined) message = `${name}: ${message}`;
  if (typeof m.retry_after === "number") message += ` (retry in ${Math.ceil(m.retry_after)} s)`;
  showError(String(m.code || "ERROR"), message);
  if (m.code === "UNAUTHORIZED") {
    ui.keyField.classList.add("key-needed");
    ui.token.focus();
  }
}

function closed(event) {
  const wasReady = config !== null;
  ws = null;
  config = null;
  stopMic(false);
  showPartial("");
  clips.clear();
  ui.clipState.textContent = "";
  ui.connect.textContent = "Connect";
  const why = event.reason ? `: ${event.reason}` : "";
  const quiet = event.code === 1000 || event.code === 1001;
  setState(quiet ? "closed" : "error", `disconnected (${event.code}${why})`);
  if (!wasReady) greeted.reject(new Error(`closed (${event.code})`));
}

// ------------------------------------------------------------------ microphone

async function startMic() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    showError(
      "MICROPHONE",
      "a browser gives the microphone to secure pages only: open this page on localhost, " +
        "or serve it over https (whisperwire serve --certfile … --keyfile …)",
    );
    return;
  }
  ui.mic.disabled = true;
  let stream = null;
  let ctx = null;
  try {
    await connect();
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    ctx = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
    let source;
    try {
      source = ctx.createMediaStreamSource(stream);
    } catch {
      // Firefox will not connect a microphone to a context at another rate: send the
      // microphone's own rate, the server resamples.
      await ctx.close();
      ctx = new AudioContext({ latencyHint: "interactive" });
      source = ctx.createMediaStreamSource(stream);
    }
    const rate = ctx.sampleRate;
    await ctx.audioWorklet.addModule("web/worklet.js");
    const node = new AudioWorkletNode(ctx, "pcm-framer", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { frameSamples: Math.round(rate / 10) },
    });
    if (!connected()) throw new Error("the connection closed");
    if (sessionRate !== null && sessionRate !== rate) {
      ws.close(1000, "new audio format"); // sample_rate is fixed once audio has started
      ws = null;
      await connect();
    }
    if (sessionRate === null) {
      send({ type: "config", sample_rate: rate, encoding: "s16le" });
      sessionRate = rate;
    }
    const socket = ws;
    node.port.onmessage = (event) => {
      if (socket === ws && socket.readyState === WebSocket.OPEN) socket.send(event.data);
    };
    source.connect(node);
    node.connect(ctx.destination); // silent (the node writes nothing): keeps it pulled
    await ctx.resume();
    mic = { ctx, stream, source, node };
    ui.mic.textContent = "Stop microphone";
    ui.mic.classList.add("live");
    setState("open", "listening");
  } catch (err) {
    if (stream) for (const track of stream.getTracks()) track.stop();
    if (ctx) ctx.close().catch(() => {});
    const denied = err && err.name === "NotAllowedError";
    const message = denied ? "the browser was not allowed to use the microphone" : err.message;
    showError("MICROPHONE", String(message || err));
  } finally {
    ui.mic.disabled = false;
  }
}

// Stops the capture and, with `flush`, sends the unfinished last frame the worklet holds,
// then asks the server for the finals of what it has, as if the speaker paused.
async function stopMic(flush) {
  if (mic === null) return;
  const { ctx, stream, source, node } = mic;
  mic = null;
  source.disconnect();
  for (const track of stream.getTracks()) track.stop();
  ui.mic.textContent = "Start microphone";
  ui.mic.classList.remove("live");
  if (flush && connected()) {
    const socket = ws;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 1000); // a closed context never answers
      node.port.onmessage = (event) => {
        if (event.data === "flushed") {
          clearTimeout(timer);
          resolve();
        } else if (socket === ws && connected()) {
          socket.send(event.data);
        }
      };
      node.port.postMessage("flush");
    });
  }
  node.port.onmessage = null;
  node.disconnect();
  ctx.close().catch(() => {});
  if (flush && connected()) {
    send({ type: "flush" });
    setState("open", "connected");
  }
}

// ------------------------------------------------------------------ clips

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file); // "data:audio/…;base64,…": the server takes the prefix
  });
}

async function sendClip(file) {
  try {
    const cfg = await connect();
    const size = Math.ceil(file.size / 3) * 4 + 200;
    if (size > cfg.max_message_bytes) {
      const limit = (cfg.max_message_bytes / 2 ** 20).toFixed(0);
      showError("MESSAGE_TOO_BIG", `${file.name} is over this server's ${limit} MiB`);
      return;
    }
    ui.clipState.textContent = `${file.name}: reading…`;
    const data = await readAsDataUrl(file);
    if (!connected()) throw new Error("the connection closed");
    clipCount += 1;
    const id = `clip-${clipCount}`;
    clips.set(id, file.name);
    send({ type: "audio", audio_id: id, format: "base64", audio_data: data });
    ui.clipState.textContent = `${file.name}: sent`;
  } catch (err) {
    ui.clipState.textContent = "";
    showError("CLIP", `${file.name}: ${err.message || err}`);
  }
}

// ------------------------------------------------------------------ transcript actions

async function copyTranscript() {
  const text = transcriptText();
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea"); // older browsers, insecure pages
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  ui.copy.textContent = "Copied";
  setTimeout(() => {
    ui.copy.textContent = "Copy";
  }, 1500);
}

function downloadTranscript() {
  const blob = new Blob([transcriptText()], { type: "text/plain;charset=utf-8" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  link.download = `transcript-${stamp}.txt`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function clearTranscript() {
  entries.length = 0;
  for (const node of [...ui.transcript.childNodes]) if (node !== ui.partial) node.remove();
  ui.partial.textContent = "";
  ui.errors.replaceChildren();
}

// ------------------------------------------------------------------ wiring

function takeKeyFromAddress() {
  // http://host:9002/#token=KEY fills the key field; the fragment never reaches a server,
  // and it is taken out of the address bar (and the history) at once.
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    ui.token.value = token;
    history.replaceState(null, "", location.pathname + location.search);
  }
}

ui.connect.addEventListener("click", () => {
  stopMic(false);
  if (ws !== null) {
    const old = ws;
    ws = null;
    config = null;
    old.close(1000, "reconnecting");
  }
  connect();
});
ui.mic.addEventListener("click", () => (mic ? stopMic(true) : startMic()));
ui.file.addEventListener("change", () => {
  const file = ui.file.files[0];
  ui.file.value = "";
  if (file) sendClip(file);
});
ui.language.addEventListener("change", choose);
ui.translate.addEventListener("change", choose);
ui.token.addEventListener("keydown", (event) => {
  if (event.key === "Enter") ui.connect.click();
});
ui.copy.addEventListener("click", copyTranscript);
ui.download.addEventListener("click", downloadTranscript);
ui.clear.addEventListener("click", clearTranscript);

takeKeyFromAddress();
connect();
