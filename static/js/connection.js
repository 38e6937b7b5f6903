// The connection badge in the top bar: silent while all is well, honest when it is not.

const SHOW_CONNECTING_AFTER_MS = 1_000;
const SHOW_RECONNECTED_FOR_MS = 3_000;

const FINAL_TEXTS = {
  4401: "Signed out. Reload the page to sign in again.",
  4403: "This page may not use the connection. Reload it.",
  4404: "This conversation no longer exists.",
};

export class ConnectionBadge {
  constructor(node) {
    this.node = node;
    this.timer = null;
    this.countdown = null;
    this.wasDown = false;
  }

  #set(text, state) {
    clearTimeout(this.timer);
    clearInterval(this.countdown);
    this.node.hidden = !text;
    this.node.textContent = text;
    this.node.dataset.state = state;
  }

  show({ state, retryInMs, code }) {
    if (state === "connecting") {
      this.#set("", state);
      this.timer = setTimeout(() => this.#set("Connecting…", state), SHOW_CONNECTING_AFTER_MS);
    } else if (state === "online") {
      if (!this.wasDown) {
        this.#set("", state);
        return;
      }
      this.wasDown = false;
      this.#set("Reconnected", state);
      this.timer = setTimeout(() => this.#set("", state), SHOW_RECONNECTED_FOR_MS);
    } else if (state === "reconnecting") {
      this.wasDown = true;
      if (!retryInMs) {
        this.#set("Reconnecting…", state);
        return;
      }
      const until = Date.now() + retryInMs;
      const tick = () => {
        const seconds = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        this.node.textContent = seconds ? `Connection lost · retrying in ${seconds} s` : "Reconnecting…";
      };
      this.#set("Connection lost", state);
      tick();
      this.countdown = setInterval(tick, 1000);
    } else if (state === "offline") {
      this.wasDown = true;
      this.#set("You are offline · will reconnect when the network is back", state);
    } else if (state === "closed") {
      this.#set(FINAL_TEXTS[code] || "Disconnected. Reload the page.", state);
    }
  }

  /** Draws the eye to the badge when an action needs the connection it does not have. */
  nudge() {
    if (this.node.hidden) this.#set("Not connected", "reconnecting");
    this.node.animate?.([{ transform: "scale(1)" }, { transform: "scale(1.08)" }, { transform: "scale(1)" }], 300);
  }
}
