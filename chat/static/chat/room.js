// The room page: renders what the connection hands it and sends what is typed.
// User text only ever reaches the page through textContent (and, for http(s) URLs, links made
// with the DOM), never as HTML. The log's layout (day separators, grouping, the new-messages
// marker) lives in log.js; this module wires the page together.
import { ChatConnection } from "./socket.js";
import { MessageLog } from "./log.js";

const roomName = JSON.parse(document.getElementById("room-name").textContent);
const me = JSON.parse(document.getElementById("me").textContent);
const input = document.querySelector("#chat-message-input");
const submit = document.querySelector("#chat-message-submit");
const composer = document.querySelector("#composer");
const status = document.querySelector("#connection-status");
const older = document.querySelector("#load-older");
const empty = document.querySelector("#empty-room");
const notice = document.querySelector("#notice");
const typingLine = document.querySelector("#typing");
const peopleLine = document.querySelector("#people");
const present = new Map(); // name → true for a guest
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

const log = new MessageLog(document.querySelector("#chat-log"), {
  me,
  jump: document.querySelector("#jump-latest"),
  title: document.title,
  onEdit: (seq, text) => change({ type: "edit", seq, message: text }),
  onDelete: (seq) => change({ type: "delete", seq }),
  onRendered: showRendered,
});

function change(frame) {
  if (!chat.change(frame)) {
    showNotice("You are offline: try again once connected.");
  }
}

function showMessage(message) {
  // Whoever posted has stopped typing.
  if (typists.has(message.author)) {
    clearTimeout(typists.get(message.author));
    typists.delete(message.author);
    showTyping();
  }
  log.add(message);
}

// After the log drew a batch of messages: for tests, the newest seq the page shows.
function showRendered() {
  empty.hidden = true;
  older.hidden = !chat.hasOlder;
  document.body.dataset.lastSeq = String(chat.newestSeq);
}

function showChange(frame) {
  log.change(frame);
  document.body.dataset.lastSeq = String(chat.newestSeq);
}

function showPending(pending) {
  log.showPending(pending);
  document.body.dataset.pending = String(pending.length);
}

function showNotice(text) {
  notice.textContent = text ? `⚠ ${text}` : "";
  notice.hidden = !text;
}

function showError(error) {
  showNotice(error.detail ?? error.code);
}

function showSynced() {
  // The history is in: say so when the room has none, rather than leave a blank log.
  empty.hidden = log.size > 0;
  log.synced = true;
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
  typingLine.title = typingLine.textContent;
  document.body.dataset.typing = names.join(",");
}

// A guest is shown as one here too, as beside their messages: never passing for an account.
const shownName = (name) => (present.get(name) ? `${name} (guest)` : name);

function showPresence(frame) {
  if (frame.people) {
    present.clear();
    frame.people.forEach((person) => present.set(person.name, Boolean(person.guest)));
  }
  (frame.joined ?? []).forEach((person) => present.set(person.name, Boolean(person.guest)));
  (frame.left ?? []).forEach((person) => present.delete(person.name));
  const names = Array.from(present.keys()).sort((a, b) => a.localeCompare(b));
  const more = names.length - PEOPLE_SHOWN;
  const shown = names.slice(0, PEOPLE_SHOWN).map(shownName).join(", ");
  peopleLine.textContent = `Here (${names.length}): ${shown}${more > 0 ? ` and ${more} more` : ""}`;
  peopleLine.title = names.map(shownName).join(", ");
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
  log.clear();
  older.hidden = true;
}

function showState(state, detail = {}) {
  document.body.dataset.wsState = state;
  if (state === "reconnecting") {
    // The last few closes, as "code:delay ms", newest last: what a test (or a curious reader in
    // the inspector) can see of the reconnect policy.
    const closes = (document.body.dataset.closes ?? "").split(",").filter(Boolean);
    closes.push(`${detail.code ?? ""}:${Math.round(detail.delay ?? 0)}`);
    document.body.dataset.closes = closes.slice(-10).join(",");
  }
  status.textContent = STATE_LABELS[state] ?? state;
  status.dataset.state = state;
  if (state === "open") {
    showNotice("");
  }
}

const scheme = window.location.protocol === "https:" ? "wss" : "ws";
const chat = new ChatConnection(
  `${scheme}://${window.location.host}/ws/chat/${roomName}/`,
  {
    onMessage: showMessage,
    onChange: showChange,
    onPending: showPending,
    onState: showState,
    onError: showError,
    onSynced: showSynced,
    onReset: forgetMessages,
    onTyping: someoneTyping,
    onPresence: showPresence,
  },
  `chat.pending.${roomName}`,
);

function sendTyped() {
  const text = input.value;
  if (!text.trim()) {
    return;
  }
  chat.post(text);
  input.value = "";
  input.focus();
  log.scrollToLatest();
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendTyped();
});
submit.addEventListener("click", sendTyped);
input.addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter is a new line; Enter that ends an IME composition is neither.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendTyped();
  }
});
input.addEventListener("input", () => {
  if (input.value.trim()) {
    chat.typing();
  }
});
older.addEventListener("click", () => chat.loadOlder());
input.focus();
chat.start();
