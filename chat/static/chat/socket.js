// Owns the connection to one room: connects and reconnects (exponential backoff with jitter),
// resumes after the last sequence number it holds, keeps posts until the server acknowledges
// them (resending by client id, so each is stored once, and keeping them in localStorage so they
// outlive the tab), and hands the page each stored message and each change (an edit, a delete)
// exactly once. It knows nothing about the DOM.

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const HISTORY_PAGE = 50;
// At most one typing notice per this many ms (the server refuses them closer together).
const TYPING_EVERY_MS = 3000;
// Close codes (docs/protocol.md) that change how the client reconnects.
const CLOSE_RATE_LIMITED = 4429; // wait longer before coming back
const CLOSE_ROOM_GONE = 4404; // the room's history is gone: start afresh
// The server is restarting (SIGTERM): it acknowledged what it stored and the other processes
// are up, so come back at once, with no backoff.
const CLOSE_RESTARTING = 1012;
// Not let in (sign-in required, a private room, a ban): trying again will not help.
const CLOSE_REFUSED = new Set([4401, 4403]);
const RATE_LIMITED_MIN_MS = 5000;
// Errors after which a post may succeed if sent again; any other refusal is final.
const RETRYABLE = new Set(["rate_limited", "not_stored"]);
// Frames that take a place in the room's sequence: the resume position is the highest held.
const SEQUENCED = new Set(["message", "edit", "delete"]);

function newClientId() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") {
    return window.crypto.randomUUID();
  }
  // randomUUID needs a secure context; plain http on a LAN address is not one.
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class ChatConnection {
  /**
   * @param {string} baseUrl  ws:// or wss:// URL of the room
   * @param {object} handlers
   * @param {(message: object) => void} handlers.onMessage  a stored message, once per seq
   * @param {(pending: {clientId: string, text: string}[]) => void} handlers.onPending
   * @param {(state: string, detail: object) => void} handlers.onState
   * @param {(error: object) => void} handlers.onError
   * @param {(lastSeq: number) => void} handlers.onSynced  the history (or catch-up) is complete
   * @param {() => void} handlers.onReset  the room was deleted: forget every message shown
   * @param {(name: string) => void} handlers.onTyping  someone else is typing
   * @param {(frame: object) => void} handlers.onPresence  who is here: all, or joined/left
   * @param {(change: object) => void} handlers.onChange  an edit or delete frame, once per seq
   * @param {string} storageKey  where posts wait for their ack across reloads (localStorage)
   */
  constructor(baseUrl, handlers, storageKey = null) {
    this.baseUrl = baseUrl;
    // onMessage, onPending, onState, onError, onSynced, onReset, onTyping, onPresence, onChange
    this.handlers = handlers;
    this.storage = new PendingStore(storageKey);
    this.typedAt = 0;
    // Leaving the page (or going into the back-forward cache) closes the socket at once, so
    // the room sees this person leave now rather than when the server notices.
    window.addEventListener("pagehide", () => {
      const socket = this.socket;
      this.socket = null;
      socket?.close(1000, "page hidden");
    });
    window.addEventListener("pageshow", (event) => {
      if (event.persisted && this.socket === null) {
        this.start();
      }
    });
    this.socket = null;
    this.attempt = 0;
    this.seqs = new Set();
    this.oldestSeq = 0;
    this.newestSeq = 0;
    // Client id → text, in posting order; posts a previous page of this room left unsent first.
    this.pending = new Map(this.storage.load());
    this.syncedTo = null; // the room position held in full, from the server's `synced` frame
  }

  /** Open the connection, and reopen it whenever it drops. */
  start() {
    this.setState("connecting");
    this.announcePending();
    // Resume after the newest message held (or the position synced to, in a quiet room);
    // the first time, the server sends the latest page and says where that leaves us.
    const position = Math.max(this.newestSeq, this.syncedTo ?? 0);
    const known = this.syncedTo !== null || this.newestSeq > 0;
    const url = known ? `${this.baseUrl}?after=${position}` : `${this.baseUrl}?sync=1`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.setState("open");
      for (const [clientId, text] of this.pending) {
        this.transmit({ type: "message", message: text, client_id: clientId });
      }
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => {
      if (this.socket === socket) {
        this.socket = null;
        this.scheduleReconnect(event.code);
      }
    });
  }

  /** Post a message: shown as pending until acknowledged, resent across reconnects. */
  post(text) {
    const clientId = newClientId();
    this.pending.set(clientId, text);
    this.storage.add(clientId, text);
    this.announcePending();
    this.transmit({ type: "message", message: text, client_id: clientId });
  }

  /**
   * Change a stored message: `{type: "edit", seq, message}` or `{type: "delete", seq}`.
   * Sent now or not at all (false when offline): a change is not kept for later.
   */
  change(frame) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
      return false;
    }
    this.transmit({ ...frame, client_id: newClientId() });
    return true;
  }

  /** Say this person is typing: sent at most once per TYPING_EVERY_MS, never queued. */
  typing() {
    const now = Date.now();
    if (now - this.typedAt >= TYPING_EVERY_MS) {
      this.typedAt = now;
      this.transmit({ type: "typing" });
    }
  }

  /** Ask for the page of messages before the oldest one held. */
  loadOlder() {
    if (this.oldestSeq > 1) {
      this.transmit({ type: "history", before: this.oldestSeq, limit: HISTORY_PAGE });
    }
  }

  get hasOlder() {
    return this.oldestSeq > 1;
  }

  transmit(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
    }
    // Otherwise nothing is lost: posts stay pending and are resent when the socket opens.
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame && frame.type) {
      case "message":
      case "edit":
      case "delete":
        this.accept(frame);
        break;
      case "history":
        // Pages after a seq hold edits and deletes too, in seq order.
        frame.messages.forEach((message) => this.accept(message));
        break;
      case "ack":
        this.settle(frame.client_id);
        break;
      case "synced":
        this.syncedTo = Math.max(this.syncedTo ?? 0, frame.last_seq);
        this.handlers.onSynced(this.syncedTo);
        break;
      case "error":
        this.refused(frame);
        break;
      case "typing":
        this.handlers.onTyping(frame.name);
        break;
      case "presence":
        this.handlers.onPresence(frame);
        break;
      default:
        break;
    }
  }

  accept(message) {
    const seq = message.seq;
    if (!SEQUENCED.has(message.type ?? "message") || !Number.isInteger(seq) || this.seqs.has(seq)) {
      return;
    }
    const held = Math.max(this.newestSeq, this.syncedTo ?? 0);
    if (held && seq > held + 1) {
      // A jump: fetch what lies between (the server fills gaps too; this is the backstop).
      const missing = Math.min(seq - held - 1, 100);
      this.transmit({ type: "history", after: held, limit: missing });
    }
    this.seqs.add(seq);
    this.newestSeq = Math.max(this.newestSeq, seq);
    if (message.type === "edit" || message.type === "delete") {
      this.handlers.onChange(message);
      return;
    }
    // Only posts count for "load older": `before` pages hold posts alone.
    this.oldestSeq = this.oldestSeq ? Math.min(this.oldestSeq, seq) : seq;
    if (message.client_id) {
      this.settle(message.client_id);
    }
    this.handlers.onMessage(message);
  }

  refused(error) {
    const clientId = error.client_id;
    const text = clientId === undefined ? undefined : this.pending.get(clientId);
    if (text !== undefined && RETRYABLE.has(error.code)) {
      // Not stored this time: send it again when the server says it may succeed.
      setTimeout(() => {
        if (this.pending.has(clientId)) {
          this.transmit({ type: "message", message: text, client_id: clientId });
        }
      }, 1000 * (error.retry_after ?? 1));
    } else if (text !== undefined) {
      // Refused for good (too long, not storable…): resending would only be refused again.
      this.settle(clientId);
    }
    this.handlers.onError(error);
  }

  settle(clientId) {
    if (this.pending.delete(clientId)) {
      this.storage.remove(clientId);
      this.announcePending();
    }
  }

  announcePending() {
    const list = Array.from(this.pending, ([clientId, text]) => ({ clientId, text }));
    this.handlers.onPending(list);
  }

  scheduleReconnect(code) {
    if (CLOSE_REFUSED.has(code)) {
      this.setState("refused", { code });
      return;
    }
    if (code === CLOSE_ROOM_GONE) {
      this.seqs.clear();
      this.oldestSeq = 0;
      this.newestSeq = 0;
      this.syncedTo = null;
      this.handlers.onReset();
    }
    if (code === CLOSE_RESTARTING && this.attempt === 0) {
      // Once: if that reconnect fails too, the backoff below applies from its first step.
      this.attempt = 1;
      this.setState("reconnecting", { code, delay: 0 });
      setTimeout(() => this.start(), 0);
      return;
    }
    // Exponential backoff with full jitter, so a restarted server is not stampeded.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    let delay = Math.random() * ceiling;
    if (code === CLOSE_RATE_LIMITED) {
      delay += RATE_LIMITED_MIN_MS;
    }
    this.attempt += 1;
    this.setState("reconnecting", { code, delay });
    setTimeout(() => this.start(), delay);
  }

  setState(state, detail = {}) {
    this.state = state;
    this.handlers.onState(state, detail);
  }
}

/**
 * Posts waiting for their ack, in localStorage under one key per room, so that a reload or a
 * closed tab does not lose them. Every change re-reads the stored list: other tabs of the room
 * share it (a post two tabs resend is stored once: the server knows its client id).
 */
class PendingStore {
  constructor(key) {
    this.key = key;
  }

  /** The stored posts, as [client id, text] pairs in posting order. */
  load() {
    if (!this.key) {
      return [];
    }
    try {
      const stored = JSON.parse(window.localStorage.getItem(this.key) ?? "[]");
      return Array.isArray(stored)
        ? stored.filter((pair) => Array.isArray(pair) && pair.length === 2 && pair.every((part) => typeof part === "string"))
        : [];
    } catch {
      return []; // storage disabled or full of something else: posts live as long as the tab
    }
  }

  add(clientId, text) {
    this.save([...this.load().filter(([id]) => id !== clientId), [clientId, text]]);
  }

  remove(clientId) {
    this.save(this.load().filter(([id]) => id !== clientId));
  }

  save(pairs) {
    if (!this.key) {
      return;
    }
    try {
      if (pairs.length) {
        window.localStorage.setItem(this.key, JSON.stringify(pairs));
      } else {
        window.localStorage.removeItem(this.key);
      }
    } catch {
      // Storage full or disabled: the post still waits in memory.
    }
  }
}
