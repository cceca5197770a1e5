// The review page: a queue of items, labeled with the keyboard (see pages_review.py).
// Digit or letter keys pick a label, Enter accepts the prediction, S skips, U undoes.
// Everything from data goes in with textContent or SVG attributes, never as HTML.
"use strict";
(() => {
  const root = document.getElementById("review");
  if (!root) return;
  const SVG = "http://www.w3.org/2000/svg";
  const BATCH = 50;
  const LOW_WATER = 10;
  const state = {
    queue: root.dataset.queue || "uncertain",
    by: root.dataset.by || "margin",
    loggedIn: root.dataset.loggedIn === "yes",
    items: [],        // front = the current item
    history: [],      // {item, label}, for U
    skipped: new Set(),
    done: new Map(),  // id -> label sent in this page
    keys: {},         // class -> key
    byKey: {},        // key -> class
    input: { kind: "table", features: [] },
    total: null,
    today: null,
    inFlight: 0,
    loading: false,
    more: true,
    generation: 0,    // bumps when the queue changes: late answers of the old one are dropped
    chain: Promise.resolve(),
  };
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) window.dw.text(node, text);
    return node;
  };

  function status(message, kind) {
    const node = $("review-status");
    node.textContent = "";
    node.className = "review-status" + (kind ? " " + kind : "");
    node.appendChild(document.createTextNode(message));
  }

  function needLogin(message) {
    status(message + " ", "error");
    const link = el("a", "", "Log in to label");
    link.href = window.dw.url(root.dataset.login || "/login?next=/review");
    link.id = "review-login-link";
    $("review-status").appendChild(link);
  }

  function showProgress() {
    window.dw.text($("queue-size"), state.total == null ? "…" : state.total);
    window.dw.text($("labeled-today"), state.today == null ? "…" : state.today);
  }

  function url(limit) {
    const q = new URLSearchParams({ queue: state.queue, by: state.by, limit: String(limit), offset: "0" });
    return "/api/review?" + q.toString();
  }

  function takeDoc(doc) {
    state.keys = doc.keys || {};
    state.byKey = {};
    for (const [cls, key] of Object.entries(state.keys)) state.byKey[key] = cls;
    state.input = doc.input || state.input;
    if (state.inFlight === 0) {
      state.total = doc.total;
      state.today = doc.labeled_today;
    }
    showProgress();
  }

  async function load() {
    if (state.loading) return;
    state.loading = true;
    const generation = state.generation;
    try {
      const answer = await window.dw.get(url(BATCH));
      if (generation !== state.generation) return;
      if (!answer.ok) {
        status((answer.body && answer.body.error) || "the queue did not load (" + answer.status + ")", "error");
        return;
      }
      takeDoc(answer.body);
      const have = new Set(state.items.map((it) => it.id));
      let added = 0;
      for (const item of answer.body.items || []) {
        if (have.has(item.id) || state.done.has(item.id) || state.skipped.has(item.id)) continue;
        item.queue = state.queue;
        state.items.push(item);
        added += 1;
      }
      state.more = added > 0;
      if (answer.body.note) status(answer.body.note, "muted");
      render();
    } catch (err) {
      status("the queue did not load: " + err, "error");
    } finally {
      state.loading = false;
    }
  }

  async function refreshProgress() {
    if (state.inFlight > 0) return;
    const generation = state.generation;
    const answer = await window.dw.get(url(0));
    if (answer.ok && generation === state.generation) takeDoc(answer.body);
  }

  function maybeLoad() {
    if (state.items.length < LOW_WATER && state.more) load();
  }

  function drawImage(values, shape) {
    const [channels, h, w] = shape;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("width", String(Math.max(96, w * 20)));
    svg.setAttribute("height", String(Math.max(96, h * 20)));
    svg.setAttribute("role", "img");
    svg.setAttribute("class", "pixels");
    svg.setAttribute("shape-rendering", "crispEdges");
    const finite = values.filter((v) => typeof v === "number");
    const top = Math.max(1, ...finite);
    const level = (v) => Math.round(255 * (1 - Math.min(1, Math.max(0, (v || 0) / top))));
    const plane = h * w;
    for (let y = 0; y < h; y += 1) {
      for (let x = 0; x < w; x += 1) {
        const i = y * w + x;
        let fill;
        if (channels === 3) {
          const [r, g, b] = [0, 1, 2].map((c) => 255 - level(values[c * plane + i]));
          fill = `rgb(${r},${g},${b})`;
        } else {
          const g = level(values[i]);
          fill = `rgb(${g},${g},${g})`;
        }
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", String(x));
        rect.setAttribute("y", String(y));
        rect.setAttribute("width", "1");
        rect.setAttribute("height", "1");
        rect.setAttribute("fill", fill);
        svg.appendChild(rect);
      }
    }
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${w}x${h} input image`;
    svg.appendChild(title);
    return svg;
  }

  function drawTable(values, features) {
    const table = el("table", "features");
    const body = el("tbody");
    features.forEach((name, i) => {
      const tr = el("tr");
      tr.appendChild(el("th", "", name));
      const v = values[i];
      tr.appendChild(el("td", "mono", v == null ? "(missing)" : typeof v === "number" ? +v.toFixed(4) : v));
      body.appendChild(tr);
    });
    table.appendChild(body);
    return table;
  }

  function probabilityBars(item) {
    const list = el("ol", "probs");
    const classes = item.classes || [];
    const ranked = (item.probabilities || []).map((p, i) => [p || 0, classes[i] == null ? String(i) : classes[i]]);
    ranked.sort((a, b) => b[0] - a[0]);
    for (const [p, cls] of ranked.slice(0, 3)) {
      const li = el("li");
      li.appendChild(el("span", "cls", cls));
      const bar = el("span", "bar");
      bar.style.width = Math.round(p * 100) + "%";
      li.appendChild(bar);
      li.appendChild(el("span", "p mono", p.toFixed(3)));
      list.appendChild(li);
    }
    return list;
  }

  function meta(item) {
    const dl = el("dl", "meta");
    const add = (k, v) => { dl.appendChild(el("dt", "", k)); dl.appendChild(el("dd", "", v)); };
    if (item.queue === "issues") {
      add("Given label", item.given);
      add("Suggested", item.predicted);
      add("Label quality", item.quality.toFixed(3));
      add("Confidence", item.confidence.toFixed(3));
      add("Dataset", item.version);
    } else {
      add("Prediction", item.predicted);
      add("Confidence", item.confidence.toFixed(3));
      add(state.by === "margin" ? "Margin" : "Entropy", item.score.toFixed(3));
      add("Model version", item.version + (item.variant ? " (" + item.variant + ")" : ""));
      if (state.done.has(item.id)) add("Your label", state.done.get(item.id));
    }
    return dl;
  }

  function renderItem(item, current) {
    const box = el("article", "review-item" + (current ? " current" : ""));
    box.dataset.id = item.id;
    box.dataset.predicted = item.predicted;
    const input = el("div", "input");
    const values = item.inputs || [];
    if (state.input.kind === "image") input.appendChild(drawImage(values, state.input.shape));
    else input.appendChild(drawTable(values, item.features || state.input.features || []));
    box.appendChild(input);
    if (!current) return box;
    const side = el("div", "details");
    side.appendChild(meta(item));
    side.appendChild(probabilityBars(item));
    const buttons = el("div", "label-buttons");
    for (const [cls, key] of Object.entries(state.keys)) {
      const b = el("button", "label-button", cls === key ? cls : `${cls} (${key})`);
      b.type = "button";
      b.addEventListener("click", () => labelWith(cls));
      buttons.appendChild(b);
    }
    side.appendChild(buttons);
    box.appendChild(side);
    return box;
  }

  function render() {
    const box = $("review-items");
    box.textContent = "";
    if (!state.items.length) {
      box.appendChild(el("p", "muted", state.loading ? "Loading…" : "Nothing left to review in this queue."));
      return;
    }
    box.appendChild(renderItem(state.items[0], true));
    const next = el("div", "upcoming");
    for (const item of state.items.slice(1, 6)) next.appendChild(renderItem(item, false));
    box.appendChild(next);
  }

  async function send(item, label, fresh) {
    state.inFlight += 1;
    try {
      const answer = await window.dw.post("/api/label", { id: item.id, label });
      if (answer.ok) {
        status(`Saved: ${item.id.slice(0, 24)}… is ${label}`, "ok");
        return;
      }
      // Not saved: the item comes back to the front.
      state.done.delete(item.id);
      state.history = state.history.filter((h) => h.item.id !== item.id);
      if (!state.items.some((it) => it.id === item.id)) state.items.unshift(item);
      if (fresh) { state.today -= 1; state.total += 1; }
      render();
      const why = (answer.body && answer.body.error) || "answer " + answer.status;
      if (answer.status === 401) needLogin("Not saved: " + why + ".");
      else status("Not saved: " + why, "error");
    } catch (err) {
      status("Not saved: " + err, "error");
    } finally {
      state.inFlight -= 1;
      showProgress();
      if (state.inFlight === 0) refreshProgress();
    }
  }

  function labelWith(label) {
    const item = state.items[0];
    if (!item) { status("Nothing to label here."); return; }
    if (!state.loggedIn) { needLogin("Labeling needs the studio token."); return; }
    const fresh = !state.done.has(item.id);
    state.items.shift();
    state.done.set(item.id, label);
    state.history.push({ item, label });
    if (fresh && state.total != null) { state.today += 1; state.total = Math.max(0, state.total - 1); }
    showProgress();
    render();
    status(`Labeling ${item.id.slice(0, 24)}… as ${label}`);
    state.chain = state.chain.then(() => send(item, label, fresh));
    state.more = true;
    maybeLoad();
  }

  function accept() {
    const item = state.items[0];
    if (item) labelWith(item.predicted);
    else status("Nothing to accept.");
  }

  function skip() {
    const item = state.items.shift();
    if (!item) { status("Nothing to skip."); return; }
    state.skipped.add(item.id);
    render();
    status(`Skipped ${item.id.slice(0, 24)}…`);
    maybeLoad();
  }

  function undo() {
    const last = state.history.pop();
    if (!last) { status("Nothing to undo."); return; }
    state.items = [last.item, ...state.items.filter((it) => it.id !== last.item.id)];
    render();
    status(`Back: it was labeled ${last.label}; press a key to change it (S keeps ${last.label}).`);
  }

  function switchTo(queue, by) {
    state.queue = queue;
    state.by = by;
    state.generation += 1;
    state.items = [];
    state.history = [];
    state.more = true;
    state.loading = false;
    state.total = state.today = null;
    for (const tab of root.querySelectorAll('[role="tab"]')) {
      tab.setAttribute("aria-selected", tab.dataset.queue === queue ? "true" : "false");
    }
    $("review-by").disabled = queue !== "uncertain";
    const q = new URLSearchParams({ queue, by });
    window.history.replaceState(null, "", window.dw.url("/review?" + q.toString()));
    showProgress();
    render();
    status(queue === "issues" ? "Finding likely label errors (cross-validation)…" : "Loading the queue…");
    load().then(() => { if (state.items.length) status("Ready: pick a label."); });
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    const tag = e.target && e.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    if (e.key === "Enter") {
      if (tag === "BUTTON" || tag === "A") return;  // Enter presses what has focus
      e.preventDefault();
      accept();
      return;
    }
    if (e.key.length !== 1) return;
    const key = e.key.toLowerCase();
    if (key === "s") { e.preventDefault(); skip(); }
    else if (key === "u") { e.preventDefault(); undo(); }
    else if (state.byKey[key] !== undefined) { e.preventDefault(); labelWith(state.byKey[key]); }
  });
  for (const tab of root.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => switchTo(tab.dataset.queue, state.by));
  }
  $("review-by").addEventListener("change", (e) => switchTo(state.queue, e.target.value));
  switchTo(state.queue, state.by);
})();
