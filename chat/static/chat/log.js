// The message log: rows in seq order with day separators, one author's consecutive messages
// grouped under one name, a "new messages" marker and a jump-to-latest button while the
// reader is scrolled up or away, the unread count in the tab's title, and the reader's place
// kept when older messages arrive above. It never touches the socket.
import { clockTime, dayKey, dayLabel, linkified } from "./format.js";

// Within a group, a message this long after the previous one starts a new group.
const GROUP_GAP_MS = 10 * 60 * 1000;
// Closer than this to the bottom (px) counts as reading the latest.
const BOTTOM_SLACK = 40;
const DELETED_TEXT = "message deleted";

function span(className, text = "") {
  const part = document.createElement("span");
  part.className = className;
  part.textContent = text;
  return part;
}

function button(className, text, label) {
  const control = document.createElement("button");
  control.type = "button";
  control.className = className;
  control.textContent = text;
  control.setAttribute("aria-label", label);
  return control;
}

export class MessageLog {
  /**
   * @param {HTMLElement} element  #chat-log
   * @param {object} options
   * @param {{name: string, guest: boolean, moderator: boolean}} options.me
   * @param {HTMLButtonElement} options.jump  the jump-to-latest button
   * @param {string} options.title  the page's title, before any unread count
   * @param {(seq: number, text: string) => void} options.onEdit
   * @param {(seq: number) => void} options.onDelete
   * @param {() => void} options.onRendered  after each batch of rows is laid out
   */
  constructor(element, options) {
    this.element = element;
    this.options = options;
    this.rows = new Map(); // seq → row
    this.queue = []; // messages not yet drawn
    this.flushing = null;
    this.unread = 0;
    this.marker = null;
    this.synced = false; // messages drawn before the first sync are history, never unread
    this.days = new Map(); // day key → its separator
    this.newest = 0; // the highest seq drawn
    // Whether the reader is at the bottom, as of their last scroll: when the log's size
    // changes (a phone's keyboard, a rotated screen, the composer growing) they stay there.
    this.stuck = true;
    element.addEventListener(
      "scroll",
      () => {
        this.stuck = this.atBottom();
        this.noticeReading();
      },
      { passive: true },
    );
    new ResizeObserver(() => {
      if (this.stuck) {
        element.scrollTop = element.scrollHeight;
      }
    }).observe(element);
    document.addEventListener("visibilitychange", () => this.noticeReading());
    options.jump.addEventListener("click", () => {
      this.scrollToLatest();
      this.element.focus();
    });
    element.addEventListener("click", (event) => this.act(event));
  }

  get size() {
    return this.rows.size + this.queue.length;
  }

  /** Draw a stored message (soon: many that arrive together are laid out at once). */
  add(message) {
    this.queue.push(message);
    this.flushing ??= setTimeout(() => this.flush(), 0);
  }

  /** Apply an edit or delete frame to the message it targets, if it is shown. */
  change(frame) {
    this.flush();
    const row = this.rows.get(frame.target);
    // A change older than one already applied, or to a message not loaded (its page will
    // come with the change applied), changes nothing.
    if (!row || Number(row.dataset.changed ?? 0) > frame.seq) {
      return;
    }
    row.dataset.changed = String(frame.seq);
    if (frame.type === "delete") {
      this.tombstone(row);
    } else if (!row.classList.contains("deleted")) {
      this.setText(row, frame.message, frame.time);
    }
  }

  /** Posts not yet acknowledged, drawn last, hidden from screen readers (they hear the post
   * once, when it is stored and arrives as a message). */
  showPending(pending) {
    this.keepingPlace(() => {
      this.element.querySelectorAll(".msg.pending").forEach((row) => row.remove());
      for (const { text } of pending) {
        const row = span("msg pending");
        row.setAttribute("aria-hidden", "true");
        row.append(span("head", "sending…"), span("time"), span("text", text), "\n");
        this.element.append(row);
      }
    });
  }

  /** Forget every message (the room was deleted). */
  clear() {
    this.queue = [];
    this.rows.clear();
    this.days.clear();
    this.newest = 0;
    this.element.querySelectorAll(".msg[data-seq], .day, .new-marker").forEach((row) => row.remove());
    this.marker = null;
    this.setUnread(0);
  }

  scrollToLatest() {
    this.flush();
    this.element.scrollTop = this.element.scrollHeight;
    this.noticeReading();
  }

  // --- drawing ---------------------------------------------------------------------------

  flush() {
    clearTimeout(this.flushing);
    this.flushing = null;
    if (this.queue.length === 0) {
      return;
    }
    const batch = this.queue.sort((a, b) => a.seq - b.seq);
    this.queue = [];
    const reading = this.readingLatest();
    const unreadBefore = this.unread;
    let firstUnread = null;
    let earliest = null;
    this.keepingPlace(() => {
      for (const message of batch) {
        if (this.rows.has(message.seq)) {
          continue;
        }
        const row = this.row(message);
        this.rows.set(message.seq, row);
        this.element.insertBefore(row, this.successor(message.seq));
        this.newest = Math.max(this.newest, message.seq);
        if (earliest === null || message.seq < Number(earliest.dataset.seq)) {
          earliest = row;
        }
        // Unread: live news from others (not history, nor an older page) the reader missed.
        if (this.synced && !reading && !row.classList.contains("own") && this.nextRow(row) === null) {
          firstUnread ??= row;
          this.unread += 1;
        }
      }
      if (firstUnread && unreadBefore === 0) {
        this.placeMarker(firstUnread);
      }
      if (earliest) {
        this.layout(earliest);
      }
    });
    this.setUnread(this.unread);
    this.options.onRendered?.();
  }

  /** The element a message of `seq` goes before: the next higher seq, or the pending posts. */
  successor(seq) {
    if (seq > this.newest) {
      return this.element.querySelector(".msg.pending");
    }
    for (const row of this.element.querySelectorAll(".msg[data-seq]")) {
      if (Number(row.dataset.seq) > seq) {
        return this.lead(row);
      }
    }
    return this.element.querySelector(".msg.pending");
  }

  /** The first of the separators and marker just before `row`, or the row itself. */
  lead(row) {
    let first = row;
    while (first.previousElementSibling?.matches(".day, .new-marker")) {
      first = first.previousElementSibling;
    }
    return first;
  }

  row(message) {
    const row = span("msg");
    row.dataset.seq = String(message.seq);
    row.dataset.author = message.author;
    row.dataset.guest = message.guest ? "true" : "false";
    row.dataset.time = message.time;
    const own = message.author === this.options.me.name && Boolean(message.guest) === this.options.me.guest;
    row.classList.toggle("own", own);
    const head = span("head");
    head.append(span("author", message.author));
    if (message.guest) {
      // Beside the name, not in it: a guest never passes for the account of the same name.
      head.append(" ", span("badge", "guest"));
    }
    if (own) {
      head.append(" ", span("you", "(you)"));
    }
    const time = document.createElement("time");
    time.className = "time";
    time.dateTime = message.time;
    time.textContent = clockTime(message.time);
    time.title = new Date(message.time).toLocaleString();
    row.append(head, " ", time, " ", span("text"));
    if (message.deleted) {
      this.tombstone(row);
    } else {
      this.setText(row, message.message, message.edited);
      if (own || this.options.me.moderator) {
        const actions = span("actions");
        actions.append(
          button("edit", "Edit", `Edit message ${message.seq}`),
          button("delete", "Delete", `Delete message ${message.seq}`),
        );
        row.append(" ", actions);
      }
    }
    row.append("\n");
    return row;
  }

  setText(row, text, editedAt) {
    row.querySelector(".text").replaceChildren(linkified(text));
    if (editedAt) {
      let edited = row.querySelector(".edited");
      if (!edited) {
        // Beside the text, not in it: `.text` is exactly what was posted.
        edited = document.createElement("time");
        edited.className = "edited";
        edited.textContent = "(edited)";
        row.querySelector(".text").after(" ", edited);
      }
      edited.dateTime = editedAt;
      edited.title = `Edited ${new Date(editedAt).toLocaleString()}`;
      row.classList.add("edited");
    }
  }

  tombstone(row) {
    row.classList.add("deleted");
    row.classList.remove("edited");
    row.querySelector(".text").replaceChildren(DELETED_TEXT);
    row.querySelector(".edited")?.remove();
    row.querySelector(".actions")?.remove();
    // Someone (a moderator, another tab) deleted it while it was being edited here.
    row.querySelector(".editor")?.remove();
    row.querySelector(".text").hidden = false;
  }

  /** Day separators and grouping, from `row` (and the one before it) to the end. */
  layout(start) {
    let previous = this.previousRow(start);
    for (let row = start; row; row = this.nextRow(row)) {
      const day = dayKey(row.dataset.time);
      const newDay = !previous || dayKey(previous.dataset.time) !== day;
      this.separate(row, newDay ? day : null);
      const gap = previous ? new Date(row.dataset.time) - new Date(previous.dataset.time) : 0;
      const continues =
        !newDay &&
        previous.dataset.author === row.dataset.author &&
        previous.dataset.guest === row.dataset.guest &&
        gap < GROUP_GAP_MS &&
        this.marker?.nextElementSibling !== row;
      row.classList.toggle("cont", continues);
      previous = row;
    }
  }

  /** Put the separator of `day` just before `row` (under the marker), or take it away. */
  separate(row, day) {
    const before = row.previousElementSibling;
    const current = before?.matches(".day") ? before : null;
    if (current && current.dataset.day === day) {
      return;
    }
    if (current) {
      current.remove();
      this.days.delete(current.dataset.day);
    }
    if (day === null) {
      return;
    }
    let separator = this.days.get(day);
    if (!separator) {
      separator = span("day", dayLabel(row.dataset.time));
      separator.append("\n"); // a line of its own in the log's text
      separator.dataset.day = day;
      this.days.set(day, separator);
    }
    row.before(separator);
  }

  previousRow(row) {
    let previous = row.previousElementSibling;
    while (previous && !previous.matches(".msg[data-seq]")) {
      previous = previous.previousElementSibling;
    }
    return previous;
  }

  nextRow(row) {
    let next = row.nextElementSibling;
    while (next && !next.matches(".msg[data-seq]")) {
      next = next.nextElementSibling;
    }
    return next;
  }

  // --- the reader's place ------------------------------------------------------------------

  /** True while the reader sees the newest message: scrolled to the bottom, tab visible. */
  readingLatest() {
    return this.atBottom() && !document.hidden;
  }

  atBottom() {
    const log = this.element;
    return log.scrollHeight - log.scrollTop - log.clientHeight < BOTTOM_SLACK;
  }

  /**
   * Change the log without moving what the reader looks at: at the bottom it stays at the
   * bottom; scrolled up, the first row in view stays where it is (older messages arriving
   * above it, say, after "Load older").
   */
  keepingPlace(change) {
    const log = this.element;
    const stick = this.atBottom() || this.stuck;
    const anchor = stick ? null : this.firstVisible();
    const offset = anchor ? anchor.offsetTop - log.scrollTop : 0;
    change();
    if (stick) {
      log.scrollTop = log.scrollHeight;
    } else if (anchor?.isConnected) {
      log.scrollTop = anchor.offsetTop - offset;
    }
    this.showJump();
  }

  /** The first message row at least partly in view. */
  firstVisible() {
    const top = this.element.scrollTop;
    for (const row of this.element.querySelectorAll(".msg[data-seq]")) {
      if (row.offsetTop + row.offsetHeight > top) {
        return row;
      }
    }
    return null;
  }

  placeMarker(row) {
    this.marker?.remove();
    this.marker = span("new-marker", "New messages");
    this.marker.append("\n");
    // Above the day separator of its row, if it has one.
    this.lead(row).before(this.marker);
  }

  noticeReading() {
    if (this.readingLatest() && this.unread > 0) {
      this.setUnread(0);
    }
    this.showJump();
  }

  setUnread(count) {
    this.unread = count;
    document.title = count > 0 ? `(${count}) ${this.options.title}` : this.options.title;
    document.body.dataset.unread = String(count);
    this.showJump();
  }

  showJump() {
    const jump = this.options.jump;
    jump.hidden = this.atBottom();
    jump.textContent = this.unread > 0 ? `↓ ${this.unread} new` : "↓ Latest";
    jump.setAttribute(
      "aria-label",
      this.unread > 0 ? `Jump to the latest: ${this.unread} new messages` : "Jump to the latest message",
    );
  }

  // --- editing -----------------------------------------------------------------------------

  act(event) {
    const control = event.target.closest("button");
    const row = control?.closest(".msg[data-seq]");
    if (!row) {
      return;
    }
    const seq = Number(row.dataset.seq);
    if (control.classList.contains("edit")) {
      this.openEditor(row);
    } else if (control.classList.contains("delete")) {
      if (window.confirm("Delete this message? Everyone will see that it was deleted.")) {
        this.options.onDelete(seq);
      }
    }
  }

  openEditor(row) {
    if (row.querySelector(".editor")) {
      return;
    }
    const seq = Number(row.dataset.seq);
    const body = row.querySelector(".text");
    const original = body.textContent;
    const editor = span("editor");
    const field = document.createElement("textarea");
    field.className = "edit-input";
    field.value = original;
    field.rows = 1;
    field.maxLength = 4000;
    field.setAttribute("aria-label", "Edit message");
    field.setAttribute("aria-describedby", "edit-hint");
    const hint = span("edit-hint", "Enter to save · Shift+Enter for a new line · Esc to cancel");
    hint.id = "edit-hint";
    editor.append(field, hint);
    body.hidden = true;
    body.after(editor);
    field.focus();
    field.setSelectionRange(field.value.length, field.value.length);
    const close = () => {
      editor.remove();
      body.hidden = false;
      row.querySelector("button.edit")?.focus();
    };
    field.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        close();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        const text = field.value;
        close();
        if (text.trim() && text !== original) {
          this.options.onEdit(seq, text);
        }
      }
    });
  }
}

