// Keyboard: Enter sends, Shift+Enter adds a line, Esc stops the answer (or closes an open menu).

export function bindComposerKeys(textarea, { send, stop }) {
  textarea.addEventListener("keydown", (event) => {
    // isComposing: Enter that confirms an IME composition (Japanese, Chinese...) is not "send".
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    event.preventDefault();
    send();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (stop && stop()) {
      event.preventDefault();
      return;
    }
    const open = document.activeElement?.closest("details[open]") || document.querySelector("details.tool[open]");
    if (open) {
      open.removeAttribute("open");
      open.querySelector("summary")?.focus();
    }
  });
}

/** Grows the textarea with its text, up to the CSS max-height. */
export function autosize(textarea) {
  const fit = () => {
    textarea.style.height = "auto";
    textarea.style.height = `${textarea.scrollHeight + 2}px`;
  };
  textarea.addEventListener("input", fit);
  fit();
  return fit;
}
