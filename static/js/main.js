// Entry point of every signed-in page: wires up what the page contains.

import { initConversation } from "./chat.js";
import { initLiveSearch, initNewChat } from "./conversations.js";
import { addCopyButtons } from "./copy.js";
import { autosize, bindComposerKeys } from "./keyboard.js";

addCopyButtons(document);

const search = document.querySelector("form[data-live-search]");
if (search) initLiveSearch(search);

const conversation = document.getElementById("conversation");
if (conversation) initConversation(conversation);

const newChat = document.querySelector("form[data-new-chat]");
if (newChat) {
  const textarea = newChat.querySelector("textarea");
  const submit = initNewChat(newChat);
  autosize(textarea);
  bindComposerKeys(textarea, { send: submit, stop: null });
  textarea.focus();
}

// Scripted behaviour is in place (styles and tests can tell the page is more than its HTML).
document.documentElement.dataset.js = "ready";
