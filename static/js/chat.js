// One conversation page: sending, streaming, stop, regenerate, edit, reconnect and resume.
//
// The page works without this module (its forms post and the server answers in one piece);
// this module sends the same forms over the WebSocket instead and streams the answer. After
// every answer it fetches the server's rendering of the stored thread, so what stays on the
// screen is always what was stored, sanitised and formatted by the server.

import { ChatSocket } from "./socket.js";
import { Thread } from "./thread.js";
import { bindComposerKeys, autosize } from "./keyboard.js";
import { explain, explainPartial } from "./errors.js";
import { getJSON } from "./http.js";
import { showTitle, takePendingMessage } from "./conversations.js";
import { ConnectionBadge } from "./connection.js";

// Resuming an answer and hearing nothing for this long: say it may have been lost.
const STALL_WARNING_MS = 30_000;

export function initConversation(root) {
  const conversationId = root.dataset.conversationId;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new ChatSocket(`${scheme}://${location.host}/ws/${conversationId}`);
  const thread = new Thread(
    root.querySelector("#thread"),
    root.querySelector("#thread-wrap"),
    root.querySelector("#answer-announcer"),
  );
  const form = root.querySelector("#composer");
  const textarea = form.querySelector("textarea");
  const sendButton = form.querySelector("#send-button");
  const stopButton = form.querySelector("#stop-button");
  const badge = new ConnectionBadge(document.getElementById("connection"));
  const fit = autosize(textarea);

  // The state of the one answer this page follows.
  let answer = null; // StreamingAnswer on screen
  let awaiting = null; // {kind, text} sent, no "start" yet
  let stallTimer = null;

  const busy = () => answer !== null || awaiting !== null;

  function setBusy() {
    const isBusy = busy();
    stopButton.hidden = !isBusy;
    sendButton.disabled = isBusy;
    root.setAttribute("aria-busy", String(isBusy));
  }

  function watchForStall() {
    clearTimeout(stallTimer);
    stallTimer = setTimeout(() => {
      answer?.setState("No news from the server for a while: the answer may have been interrupted. Reload the page to see what was saved.");
    }, STALL_WARNING_MS);
  }

  function ensureAnswer() {
    if (answer === null) answer = thread.startAnswer();
    return answer;
  }

  async function showStoredThread() {
    try {
      const { html, title } = await getJSON(root.dataset.threadUrl);
      thread.replace(html);
      showTitle(conversationId, title);
    } catch {
      thread.showProblem({ what: "Could not load the saved conversation.", next: "Reload the page." });
    }
  }

  async function finish(event) {
    clearTimeout(stallTimer);
    socket.setResumePoint(null);
    answer?.setState("Formatting…");
    await showStoredThread();
    answer = null;
    awaiting = null;
    setBusy();
    thread.announce(event.stopped ? "Answer stopped." : "Answer complete.");
  }

  async function fail(event) {
    clearTimeout(stallTimer);
    socket.setResumePoint(null);
    const before = awaiting;
    const delivered = answer !== null && !answer.isEmpty;
    const nothingStored = before?.kind === "message" && !event.message_id;
    if (nothingStored) {
      // The question was not stored either: it goes back into the box, to send again.
      answer?.remove();
      before.question?.remove();
      if (!textarea.value.trim()) {
        textarea.value = before.text;
        fit();
      }
    } else {
      // A partial answer, or the question of a regenerate or edit, was stored: show it.
      await showStoredThread();
    }
    answer = null;
    awaiting = null;
    setBusy();
    const words = event.partial && delivered ? explainPartial() : explain(event);
    const retry = nothingStored
      ? { label: "Send again", run: () => submitText(before.text) }
      : { label: "Regenerate", run: regenerate };
    thread.showProblem(words, retry);
    thread.announce(`${words.what} ${words.next}`);
  }

  socket.addEventListener("message", ({ detail: event }) => {
    if (event.type === "start") {
      awaiting = awaiting && { ...awaiting, started: true };
      ensureAnswer();
      socket.setResumePoint(event.id);
      watchForStall();
    } else if (event.type === "delta") {
      if (typeof event.content === "string") ensureAnswer().append(event.content);
      socket.setResumePoint(event.id);
      watchForStall();
    } else if (event.type === "done") {
      finish(event);
    } else if (event.type === "error") {
      fail(event);
    }
    setBusy();
  });

  socket.addEventListener("status", ({ detail }) => {
    badge.show(detail);
    if (detail.state === "online" && awaiting && !awaiting.started) {
      // The connection dropped between sending and the answer's start: whether the server got
      // the message is unknown, and there is no answer id to resume. Show what is stored.
      const text = awaiting.text;
      answer?.remove();
      answer = null;
      awaiting = null;
      setBusy();
      showStoredThread().then(() =>
        thread.showProblem(
          { what: "The connection dropped while sending.", next: "If your message is not above, send it again." },
          text ? { label: "Send again", run: () => submitText(text) } : null,
        ),
      );
      return;
    }
    if (!answer) return;
    if (detail.state === "online" && detail.resumed) answer.setState("Reconnected: resuming the answer…");
    else if (detail.state === "reconnecting" || detail.state === "offline") {
      answer.setState("Connection lost. The answer goes on on the server; it will resume here once reconnected.");
    }
  });

  function send(message, pending) {
    if (busy()) return false;
    if (!socket.send(message)) {
      badge.nudge();
      thread.showProblem({
        what: "Not connected right now.",
        next: "Your text is kept; send it again once the connection is back.",
      });
      return false;
    }
    thread.clearProblem();
    awaiting = pending;
    ensureAnswer();
    setBusy();
    return true;
  }

  function submitText(text) {
    if (!text.trim() || busy()) return;
    const question = thread.addQuestion(text);
    if (send({ type: "message", content: text }, { kind: "message", text, question })) {
      textarea.value = "";
      fit();
    } else {
      question.remove();
      if (!textarea.value.trim()) textarea.value = text;
    }
  }

  function regenerate() {
    if (busy()) return;
    thread.markLastAnswerReplaced();
    if (!send({ type: "regenerate" }, { kind: "regenerate" })) showStoredThread();
  }

  function edit(messageId, text) {
    if (!text.trim() || busy()) return;
    thread.truncateAfter(messageId, text);
    if (!send({ type: "edit", message_id: messageId, content: text }, { kind: "edit" })) showStoredThread();
  }

  function stop() {
    if (!answer) return false;
    socket.send({ type: "stop" });
    answer.setState("Stopping…");
    return true;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitText(textarea.value);
  });
  stopButton.addEventListener("click", () => {
    stop();
    textarea.focus();
  });
  bindComposerKeys(textarea, { send: () => submitText(textarea.value), stop });

  // Regenerate and edit forms live inside the thread, which is re-rendered: listen above it.
  root.addEventListener("submit", (event) => {
    const action = event.target.closest("form[data-action]");
    if (!action) return;
    event.preventDefault();
    if (action.dataset.action === "regenerate") regenerate();
    else if (action.dataset.action === "edit") {
      edit(Number(action.dataset.messageId), action.querySelector("textarea").value);
    }
    textarea.focus();
  });

  // An answer still being written when the page loaded (a reload, another tab): follow it.
  if (root.dataset.resumeRun) {
    socket.setResumePoint(root.dataset.resumeRun);
    ensureAnswer().setState("Resuming the answer in progress…");
    setBusy();
  }
  // The first message typed on the "new chat" page.
  const pending = takePendingMessage(conversationId);
  if (pending) {
    const sendPending = ({ detail }) => {
      if (detail.state !== "online") return;
      socket.removeEventListener("status", sendPending);
      submitText(pending);
    };
    socket.addEventListener("status", sendPending);
  }
  socket.start();
  thread.scrollToEnd();
  if (location.hash.startsWith("#message-")) document.querySelector(location.hash)?.scrollIntoView();
  else textarea.focus();
}
