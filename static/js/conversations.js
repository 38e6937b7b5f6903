// The conversation list: live search, titles kept current, and starting a new chat.

import { getText, postForJSON } from "./http.js";

const SEARCH_DELAY_MS = 200;
const PENDING_KEY = "chat:pending-message:";

/** Search as you type; the results are the server's rendering (GET /search?partial=1). */
export function initLiveSearch(form) {
  const input = form.querySelector("input[type=search]");
  const results = document.getElementById("search-results");
  const list = document.getElementById("conversation-nav");
  let timer = null;
  let inFlight = null;

  const clear = () => {
    results.hidden = true;
    results.innerHTML = "";
    list.hidden = false;
  };

  input.addEventListener("input", () => {
    clearTimeout(timer);
    const query = input.value.trim();
    if (!query) {
      clear();
      return;
    }
    timer = setTimeout(async () => {
      inFlight?.abort();
      inFlight = new AbortController();
      try {
        const url = `${form.action}?${new URLSearchParams({ q: query, partial: "1" })}`;
        results.innerHTML = await getText(url, { signal: inFlight.signal });
        results.hidden = false;
        list.hidden = true;
      } catch (error) {
        if (error.name !== "AbortError") clear();
      }
    }, SEARCH_DELAY_MS);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && input.value) {
      event.stopPropagation();
      input.value = "";
      clear();
    }
  });
}

/** The new title of a conversation, everywhere the page shows it. */
export function showTitle(conversationId, title) {
  if (!title) return;
  const heading = document.getElementById("conversation-title");
  if (heading) heading.textContent = title;
  const link = document.querySelector(`[data-conversation-link="${CSS.escape(conversationId)}"]`);
  if (link) link.textContent = title;
  document.title = document.title.replace(/^[^·]*/, `${title} `);
}

/** "New chat": create the conversation, then open it; its page sends the first message over
    the WebSocket (so it streams). Without script the form posts and the answer comes whole. */
export function initNewChat(form) {
  const textarea = form.querySelector("textarea");
  const submit = async () => {
    const text = textarea.value;
    if (!text.trim()) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const model = form.querySelector("select[name=model]")?.value || "";
    const { ok, body } = await postForJSON(form.action, { model });
    if (!ok || !body?.url) {
      button.disabled = false;
      form.submit(); // let the server explain, the no-script way
      return;
    }
    sessionStorage.setItem(PENDING_KEY + body.id, text);
    location.assign(body.url);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  return submit;
}

/** The first message waiting for a just-created conversation (taken once). */
export function takePendingMessage(conversationId) {
  const key = PENDING_KEY + conversationId;
  const text = sessionStorage.getItem(key);
  sessionStorage.removeItem(key);
  return text;
}
