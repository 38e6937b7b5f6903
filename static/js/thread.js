// The message list: optimistic questions, the answer being streamed, and the swap to the
// server's rendering of the stored messages once an answer is over.
//
// While streaming, text is appended as plain text (a text node: nothing a model writes can
// become markup here). The formatted, sanitised HTML comes from the server afterwards.

import { addCopyButtons } from "./copy.js";

const NEAR_BOTTOM_PX = 120;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An answer being written: its text grows; its state line says what is going on. */
class StreamingAnswer {
  constructor(thread) {
    this.thread = thread;
    this.item = element("li", "message assistant pending");
    this.item.setAttribute("aria-busy", "true");
    this.item.append(element("h3", "visually-hidden", "Answer (being written)"));
    this.content = element("div", "content streaming");
    this.text = document.createTextNode("");
    this.content.append(this.text);
    this.state = element("span", "answer-state", "Waiting for the model…");
    const meta = element("p", "meta");
    meta.append(this.state);
    this.item.append(this.content, meta);
    this.buffer = "";
    this.frame = 0;
  }

  // Tokens arrive faster than the screen refreshes: batch them per animation frame.
  append(text) {
    this.buffer += text;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      const pinned = this.thread.isNearBottom();
      this.text.appendData(this.buffer);
      this.buffer = "";
      this.setState("Writing…");
      if (pinned) this.thread.scrollToEnd();
    });
  }

  setState(text) {
    if (this.state.textContent !== text) this.state.textContent = text;
  }

  get isEmpty() {
    return this.text.length === 0 && this.buffer === "";
  }

  remove() {
    cancelAnimationFrame(this.frame);
    this.item.remove();
  }
}

export class Thread {
  constructor(list, scroller, announcer) {
    this.list = list;
    this.scroller = scroller;
    this.announcer = announcer;
  }

  isNearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  #clearEmptyNote() {
    this.list.querySelector("[data-empty]")?.remove();
  }

  /** The user's question, shown at once (replaced by the stored one after the answer). */
  addQuestion(text) {
    this.#clearEmptyNote();
    const item = element("li", "message user");
    item.append(element("h3", "visually-hidden", "You said"), element("div", "content plain", text));
    this.list.append(item);
    this.scrollToEnd();
    return item;
  }

  startAnswer() {
    this.#clearEmptyNote();
    const answer = new StreamingAnswer(this);
    this.list.append(answer.item);
    this.scrollToEnd();
    return answer;
  }

  /** The last answer, dimmed while a new one is written in its place (regenerate). */
  markLastAnswerReplaced() {
    const answers = this.list.querySelectorAll("li.message.assistant:not(.pending)");
    const last = answers[answers.length - 1];
    if (last) last.classList.add("replaced");
    this.#hideActions();
  }

  /** Edit: everything after the question goes; the question shows its new text. */
  truncateAfter(messageId, newText) {
    const question = this.list.querySelector(`li[data-message-id="${CSS.escape(String(messageId))}"]`);
    if (!question) return;
    while (question.nextElementSibling) question.nextElementSibling.remove();
    const content = question.querySelector(".content");
    if (content) content.textContent = newText;
    question.querySelector("details.edit")?.removeAttribute("open");
    this.#hideActions();
  }

  // Regenerate and edit buttons belong to the stored thread; while answering they would only
  // be refused, so they go until the server's rendering comes back.
  #hideActions() {
    for (const actions of this.list.querySelectorAll(".actions")) actions.hidden = true;
  }

  /** Swaps in the server's rendering of the stored thread. */
  replace(html) {
    const pinned = this.isNearBottom();
    this.list.innerHTML = html;
    addCopyButtons(this.list);
    if (pinned) this.scrollToEnd();
  }

  /** A plain-words problem, with an optional action button, at the end of the thread. */
  showProblem({ what, next }, action) {
    this.list.querySelector("li.problem")?.remove();
    const item = element("li", "message assistant problem");
    const alert = element("div", "alert");
    alert.setAttribute("role", "alert");
    alert.append(element("strong", "", what), document.createTextNode(" " + next));
    if (action) {
      const button = element("button", "", action.label);
      button.type = "button";
      button.addEventListener("click", () => {
        item.remove();
        action.run();
      });
      alert.append(element("br"), button);
    }
    item.append(alert);
    this.list.append(item);
    this.scrollToEnd();
  }

  clearProblem() {
    this.list.querySelector("li.problem")?.remove();
  }

  announce(text) {
    this.announcer.textContent = "";
    // A fresh text node, a frame later, so screen readers announce a repeated message too.
    requestAnimationFrame(() => {
      this.announcer.textContent = text;
    });
  }
}
