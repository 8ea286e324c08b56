// Owns the WebSocket: connects, reconnects with backoff, queues sends while offline,
// and hands each decoded frame to the page. It knows nothing about the DOM.

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;

export class ChatSocket {
  /**
   * @param {() => string} urlFor  builds the URL for each (re)connection
   * @param {{onFrame: (frame: object) => void, onState: (state: string) => void}} handlers
   */
  constructor(urlFor, { onFrame, onState }) {
    this.urlFor = urlFor;
    this.onFrame = onFrame;
    this.onState = onState;
    this.socket = null;
    this.attempt = 0;
    this.outbox = [];
    this.timer = null;
  }

  /** Open the connection (and keep reopening it when it drops). */
  start() {
    this.setState("connecting");
    const socket = new WebSocket(this.urlFor());
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.setState("open");
      this.flush();
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") {
        this.onFrame(frame);
      }
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) {
        return;
      }
      this.socket = null;
      this.scheduleReconnect(event.code);
    });
  }

  /** Send a frame now if connected, otherwise as soon as the socket opens. */
  send(frame) {
    this.outbox.push(frame);
    this.flush();
  }

  flush() {
    while (this.socket && this.socket.readyState === WebSocket.OPEN && this.outbox.length) {
      this.socket.send(JSON.stringify(this.outbox.shift()));
    }
  }

  scheduleReconnect(code) {
    // Exponential backoff with full jitter, so a restarted server is not stampeded.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = Math.random() * ceiling;
    this.attempt += 1;
    this.setState("reconnecting", { code, delay });
    this.timer = setTimeout(() => this.start(), delay);
  }

  setState(state, detail = {}) {
    this.state = state;
    this.onState(state, detail);
  }
}
