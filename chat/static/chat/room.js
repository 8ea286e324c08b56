// The room page: renders frames into #chat-log and sends what is typed.
// User text only ever reaches the page through textContent, never as HTML.
import { ChatSocket } from "./socket.js";

const roomName = JSON.parse(document.getElementById("room-name").textContent);
const log = document.querySelector("#chat-log");
const input = document.querySelector("#chat-message-input");
const submit = document.querySelector("#chat-message-submit");
const composer = document.querySelector("#composer");
const status = document.querySelector("#connection-status");

const STATE_LABELS = {
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
};

function socketUrl() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}/ws/chat/${roomName}/`;
}

function line(className, ...parts) {
  const row = document.createElement("span");
  row.className = className;
  for (const [partClass, text] of parts) {
    const part = document.createElement("span");
    part.className = partClass;
    part.textContent = text;
    row.append(part);
  }
  row.append("\n");
  return row;
}

function appendRow(row) {
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(row);
  if (atBottom) {
    log.scrollTop = log.scrollHeight;
  }
}

function onFrame(frame) {
  if (frame.type === "error") {
    appendRow(line("msg notice", ["text", `⚠ ${frame.detail}`]));
  } else if (typeof frame.message === "string") {
    appendRow(line("msg", ["text", frame.message]));
  }
}

function onState(state) {
  document.body.dataset.wsState = state;
  status.textContent = STATE_LABELS[state] ?? state;
  status.dataset.state = state;
}

const chat = new ChatSocket(socketUrl, { onFrame, onState });

function sendTyped() {
  const message = input.value;
  if (!message.trim()) {
    return;
  }
  chat.send({ type: "message", message });
  input.value = "";
  input.focus();
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendTyped();
});
submit.addEventListener("click", sendTyped);
input.focus();
chat.start();
