// The room page: renders what the connection hands it and sends what is typed.
// User text only ever reaches the page through textContent, never as HTML.
import { ChatConnection } from "./socket.js";

const roomName = JSON.parse(document.getElementById("room-name").textContent);
const log = document.querySelector("#chat-log");
const input = document.querySelector("#chat-message-input");
const submit = document.querySelector("#chat-message-submit");
const composer = document.querySelector("#composer");
const status = document.querySelector("#connection-status");
const older = document.querySelector("#load-older");
const empty = document.querySelector("#empty-room");
const typingLine = document.querySelector("#typing");
const peopleLine = document.querySelector("#people");
const present = new Set();
// Names shown in the "here" line, at most; the rest are counted.
const PEOPLE_SHOWN = 8;
// A typing notice shows this long unless it comes again (clients send one every 3 s).
const TYPING_SHOWN_MS = 5000;
const typists = new Map(); // name → timer that forgets them

const STATE_LABELS = {
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
  refused: "Not allowed here",
};
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

function span(className, text) {
  const part = document.createElement("span");
  part.className = className;
  part.textContent = text;
  return part;
}

function messageRow(message) {
  const row = document.createElement("span");
  row.className = "msg";
  row.dataset.seq = String(message.seq);
  const time = document.createElement("time");
  time.className = "time";
  time.dateTime = message.time;
  time.textContent = timeFormat.format(new Date(message.time));
  time.title = message.time;
  row.append(time, " ", span("author", message.author));
  if (message.guest) {
    // Beside the name, not in it: a guest never passes for the account of the same name.
    row.append(" ", span("badge", "guest"));
  }
  row.append(" ", span("text", message.message), "\n");
  return row;
}

function stickToBottom(change) {
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  change();
  if (atBottom) {
    log.scrollTop = log.scrollHeight;
  }
}

function showMessage(message) {
  // Whoever posted has stopped typing.
  if (typists.has(message.author)) {
    clearTimeout(typists.get(message.author));
    typists.delete(message.author);
    showTyping();
  }
  // Rows stay in sequence order whatever order they arrive in; pending posts stay last.
  const row = messageRow(message);
  let before = log.querySelector(".msg.pending, .msg.notice:last-child");
  for (const existing of log.querySelectorAll(".msg[data-seq]")) {
    if (Number(existing.dataset.seq) > message.seq) {
      before = existing;
      break;
    }
  }
  stickToBottom(() => log.insertBefore(row, before));
  empty.hidden = true;
  document.body.dataset.lastSeq = String(chat.newestSeq);
  older.hidden = !chat.hasOlder;
}

function showPending(pending) {
  stickToBottom(() => {
    log.querySelectorAll(".msg.pending").forEach((row) => row.remove());
    for (const { text } of pending) {
      const row = span("msg pending", "");
      row.append(span("author", "sending…"), span("text", text), "\n");
      log.append(row);
    }
  });
  document.body.dataset.pending = String(pending.length);
}

function showError(error) {
  const row = span("msg notice", "");
  row.append(span("text", `⚠ ${error.detail}`), "\n");
  stickToBottom(() => log.append(row));
}

function showSynced() {
  // The history is in: say so when the room has none, rather than leave a blank log.
  empty.hidden = log.querySelector(".msg[data-seq]") !== null;
  document.body.dataset.synced = "true";
}

function showTyping() {
  const names = Array.from(typists.keys());
  if (names.length === 0) {
    typingLine.textContent = "";
  } else if (names.length === 1) {
    typingLine.textContent = `${names[0]} is typing…`;
  } else if (names.length <= 3) {
    typingLine.textContent = `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are typing…`;
  } else {
    typingLine.textContent = "Several people are typing…";
  }
  document.body.dataset.typing = names.join(",");
}

function showPresence(frame) {
  if (frame.people) {
    present.clear();
    frame.people.forEach((person) => present.add(person.name));
  }
  (frame.joined ?? []).forEach((person) => present.add(person.name));
  (frame.left ?? []).forEach((person) => present.delete(person.name));
  const names = Array.from(present).sort((a, b) => a.localeCompare(b));
  const more = names.length - PEOPLE_SHOWN;
  const shown = names.slice(0, PEOPLE_SHOWN).join(", ");
  peopleLine.textContent = `Here: ${shown}${more > 0 ? ` and ${more} more` : ""}`;
  peopleLine.title = names.join(", ");
  document.body.dataset.people = names.join(",");
}

function someoneTyping(name) {
  clearTimeout(typists.get(name));
  typists.set(
    name,
    setTimeout(() => {
      typists.delete(name);
      showTyping();
    }, TYPING_SHOWN_MS),
  );
  showTyping();
}

function forgetMessages() {
  log.querySelectorAll(".msg[data-seq]").forEach((row) => row.remove());
  older.hidden = true;
}

function showState(state) {
  document.body.dataset.wsState = state;
  status.textContent = STATE_LABELS[state] ?? state;
  status.dataset.state = state;
}

const scheme = window.location.protocol === "https:" ? "wss" : "ws";
const chat = new ChatConnection(`${scheme}://${window.location.host}/ws/chat/${roomName}/`, {
  onMessage: showMessage,
  onPending: showPending,
  onState: showState,
  onError: showError,
  onSynced: showSynced,
  onReset: forgetMessages,
  onTyping: someoneTyping,
  onPresence: showPresence,
});

function sendTyped() {
  const text = input.value;
  if (!text.trim()) {
    return;
  }
  chat.post(text);
  input.value = "";
  input.focus();
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendTyped();
});
submit.addEventListener("click", sendTyped);
input.addEventListener("input", () => {
  if (input.value.trim()) {
    chat.typing();
  }
});
older.addEventListener("click", () => chat.loadOlder());
input.focus();
chat.start();
