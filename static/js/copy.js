// "Copy" buttons on code blocks, and the language label (from markdown-it's `language-*`).

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain-HTTP hosts have no Clipboard API: the old way, through a hidden selection.
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "visually-hidden";
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

export function addCopyButtons(root) {
  for (const pre of root.querySelectorAll(".markdown pre")) {
    if (pre.querySelector(".copy-button")) continue;
    const code = pre.querySelector("code") || pre;
    const language = (/\blanguage-([\w+-]+)/.exec(code.className) || [])[1] || "";
    if (language) pre.dataset.language = language;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-button";
    button.textContent = "Copy";
    button.setAttribute("aria-label", language ? `Copy ${language} code` : "Copy code");
    button.addEventListener("click", async () => {
      try {
        await copyText(code.textContent);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed";
      }
      setTimeout(() => {
        button.textContent = "Copy";
      }, 2000);
    });
    pre.append(button);
  }
}
