// Same-origin requests with the session cookie and Django's CSRF token.

function csrfToken() {
  const field = document.querySelector("input[name=csrfmiddlewaretoken]");
  return field ? field.value : "";
}

export async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

export async function getText(url, { signal } = {}) {
  const response = await fetch(url, { credentials: "same-origin", signal });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.text();
}

/** POSTs form fields, asking for JSON; resolves to {ok, status, body}. */
export async function postForJSON(url, fields) {
  const body = new FormData();
  for (const [name, value] of Object.entries(fields)) body.append(name, value);
  const response = await fetch(url, {
    method: "POST",
    body,
    credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
  });
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  return { ok: response.ok, status: response.status, body: parsed };
}
