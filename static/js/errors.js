// Errors in plain words. The wording lives on the server (chat/ui_errors.py) and arrives as a
// JSON data block in the page, so the script and the no-script pages always say the same thing.

const FALLBACK = {
  codes: {},
  statuses: {},
  types: {},
  fallback: ["Something went wrong.", "Try again."],
  partial: ["The answer was cut off.", "What arrived is kept. Regenerate to try again."],
};

let table = null;

function texts() {
  if (table === null) {
    const block = document.getElementById("error-texts");
    table = block ? { ...FALLBACK, ...JSON.parse(block.textContent) } : FALLBACK;
  }
  return table;
}

/** {what, next} for an error event or body: {error: {type, code, message}, status}. */
export function explain(event) {
  const t = texts();
  const error = event?.error || {};
  const [what, next] =
    t.codes[error.code] || t.statuses[String(event?.status)] || t.types[error.type] || t.fallback;
  return { what, next };
}

/** For an answer that failed after it had started: what arrived is kept. */
export function explainPartial() {
  const [what, next] = texts().partial;
  return { what, next };
}
