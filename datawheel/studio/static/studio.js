// Shared by every page: POST JSON with this page's CSRF value; the session cookie goes by itself.
// Behind a proxy that serves the studio under a prefix (--root-path, e.g. Kubeflow's /studio),
// dw.url("/api/...") and every fetch of a site path ("/...") go under that prefix.
"use strict";
(function () {
  const meta = document.querySelector('meta[name="root-path"]');
  const root = meta ? meta.content : "";
  const url = (path) =>
    typeof path === "string" && path.startsWith("/") && !path.startsWith("//") && root &&
    !path.startsWith(root + "/") ? root + path : path;
  if (root) {
    const plain = window.fetch.bind(window);
    window.fetch = (resource, options) => plain(url(resource), options);
  }
  window.dwRoot = { root, url };
})();
window.dw = {
  root: window.dwRoot.root,
  url: window.dwRoot.url,
  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  },
  // Resolves to {ok, status, body}; never throws on an HTTP error (the body says what was wrong).
  async post(url, body) {
    const answer = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": window.dw.csrf() },
      body: JSON.stringify(body),
    });
    let doc = null;
    try { doc = await answer.json(); } catch (e) { doc = { error: "answer was not JSON" }; }
    return { ok: answer.ok, status: answer.status, body: doc };
  },
  async get(url) {
    const answer = await fetch(url, { credentials: "same-origin" });
    let doc = null;
    try { doc = await answer.json(); } catch (e) { doc = { error: "answer was not JSON" }; }
    return { ok: answer.ok, status: answer.status, body: doc };
  },
  // Text into an element, never HTML: data from the store is shown as text.
  text(el, value) { el.textContent = value == null ? "" : String(value); },
};
