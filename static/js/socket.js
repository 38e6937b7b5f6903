// The conversation's WebSocket, kept alive.
//
// It reconnects by itself with exponential backoff and jitter, at once when the browser says
// the network is back or the tab becomes visible again (a laptop waking up), and detects a
// silently dead connection with pings. While an answer is in progress the page tells it the
// last event id it saw (`setResumePoint`); after any reconnect it asks the server to resume
// from there, so no token is lost or repeated.
//
// Events (EventTarget): "status" {state, retryInMs?, code?} and "message" (a server event).

const PING_EVERY_MS = 15_000;
const SILENCE_LIMIT_MS = 25_000; // no message at all (pongs included) for this long: dead
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15_000;
// Closed on purpose by the server: signed out, forbidden, no such conversation. Retrying
// would only fail again.
const FINAL_CLOSE_CODES = new Set([4401, 4403, 4404]);

export class ChatSocket extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.resumePoint = null;
    this.finished = false;
  }

  start() {
    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => this.#drop("offline"));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.#checkAlive();
    });
    this.#connect();
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a client message; false when not connected (the caller says so to the user). */
  send(message) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** The event id to resume from after a reconnect (a bare run id: from its start); null
      once the answer is over. */
  setResumePoint(eventId) {
    this.resumePoint = eventId;
  }

  reconnectNow() {
    if (this.finished || this.isOpen) return;
    this.attempt = 0;
    clearTimeout(this.retryTimer);
    this.#connect();
  }

  #status(state, extra = {}) {
    this.dispatchEvent(new CustomEvent("status", { detail: { state, ...extra } }));
  }

  #connect() {
    if (this.finished) return;
    if (!navigator.onLine) {
      this.#status("offline");
      return;
    }
    this.#status(this.attempt === 0 && this.lastHeard === 0 ? "connecting" : "reconnecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.lastHeard = Date.now();
      this.#startPings();
      if (this.resumePoint) ws.send(JSON.stringify({ type: "resume", last_event_id: this.resumePoint }));
      this.#status("online", { resumed: Boolean(this.resumePoint) });
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      if (data.type === "pong") return;
      this.dispatchEvent(new CustomEvent("message", { detail: data }));
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return; // a socket we already gave up on
      this.ws = null;
      this.#stopPings();
      if (FINAL_CLOSE_CODES.has(event.code)) {
        this.finished = true;
        this.#status("closed", { code: event.code });
        return;
      }
      this.#scheduleRetry();
    });
  }

  #scheduleRetry() {
    if (!navigator.onLine) {
      this.#status("offline");
      return;
    }
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    // "Equal jitter": never retry at once, never all clients in step after a server restart.
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.attempt += 1;
    this.#status("reconnecting", { retryInMs: delay });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.#connect(), delay);
  }

  /** Forgets the current socket without waiting for its close handshake (which never comes
      on a dead connection) and starts over. */
  #drop(reason) {
    const ws = this.ws;
    this.ws = null;
    this.#stopPings();
    if (ws) {
      try {
        ws.close();
      } catch {
        /* already closing */
      }
    }
    if (reason === "offline") this.#status("offline");
    else this.#scheduleRetry();
  }

  #checkAlive() {
    if (this.finished) return;
    if (this.ws === null) this.reconnectNow();
    else if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) this.#drop("silent");
  }

  #startPings() {
    this.#stopPings();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
        this.#drop("silent");
        return;
      }
      this.send({ type: "ping" });
    }, PING_EVERY_MS);
  }

  #stopPings() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }
}
