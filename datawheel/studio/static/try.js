// /try: draw (or upload, or fill the form), ask the server (/api/predict) and run the same
// model in this browser (onnxruntime-web on /api/model.onnx), and show both answers.
// Data from the store (class names, feature names) is only ever set as text.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const cfg = JSON.parse($("try-config").dataset.config);
  const classes = cfg.classes;
  const AGREE_DP = 1e-3;
  let seq = 0;
  let lastId = null;

  // --- bars ------------------------------------------------------------------------------
  function renderBars(container, probs) {
    container.replaceChildren();
    const top = probs.indexOf(Math.max(...probs));
    classes.forEach((c, i) => {
      const p = probs[i];
      const bar = document.createElement("div");
      bar.className = i === top ? "bar top" : "bar";
      bar.setAttribute("role", "listitem");
      bar.dataset.class = c;
      bar.dataset.p = String(p);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = c;
      name.title = c;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = (100 * p).toFixed(2) + "%";
      track.appendChild(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = (100 * p).toFixed(1) + "%";
      bar.append(name, track, value);
      container.appendChild(bar);
    });
    container.dataset.p = JSON.stringify(probs);
  }

  // --- the model in the browser -------------------------------------------------------------
  function softmax(logits) {
    const m = Math.max(...logits);
    const e = logits.map((z) => Math.exp(z - m));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  }

  async function loadEdge() {
    const status = $("edge-status");
    if (!cfg.edge_file) return null;
    if (typeof ort === "undefined") {
      dw.text(status, "onnxruntime-web did not load, so the model cannot run here.");
      return null;
    }
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.wasmPaths = dw.url("/static/vendor/onnxruntime-web/");
    const answer = await fetch("/api/model.onnx", { credentials: "same-origin" });
    if (!answer.ok) {
      let doc = {};
      try { doc = await answer.json(); } catch (e) { /* not JSON */ }
      dw.text(status, "Cannot run in the browser: " + (doc.error || answer.status));
      return null;
    }
    const bytes = new Uint8Array(await answer.arrayBuffer());
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    const h = (k) => answer.headers.get(k) || "";
    const edge = { session, version: h("x-model-version"), variant: h("x-model-variant"),
                   file: h("x-model-file"), served: h("x-served-variant") };
    dw.text(status, `Ready: ${edge.file} (${edge.variant}) of ${edge.version}, ` +
      (edge.variant === edge.served ? "the same file the server runs."
        : `while the server runs ${edge.served}.`));
    return edge;
  }
  const edgeReady = loadEdge().catch((e) => {
    dw.text($("edge-status"), "Cannot run in the browser: " + e);
    return null;
  });

  async function runEdge(row) {
    const edge = await edgeReady;
    if (!edge) return null;
    const input = new ort.Tensor("float32", Float32Array.from(row), [1, row.length]);
    const t0 = performance.now();
    const out = await edge.session.run({ input });
    const ms = performance.now() - t0;
    return { edge, probs: softmax(Array.from(out.logits.data)), ms };
  }

  // --- asking both ---------------------------------------------------------------------------
  async function predict(body, row) {
    const mine = ++seq;
    const t0 = performance.now();
    const [server, local] = await Promise.all([dw.post("/api/predict", body), runEdge(row)]);
    const pageMs = performance.now() - t0;
    if (mine !== seq) return; // a newer drawing is on its way
    const err = $("predict-error");
    let serverProbs = null;
    let serverLabel = null;
    if (server.ok) {
      const doc = server.body;
      serverProbs = classes.map((c) => doc.probabilities[c]);
      serverLabel = doc.label;
      lastId = doc.id;
      dw.text(err, "");
      dw.text($("prediction-label"), doc.label);
      dw.text($("prediction-id"), doc.id);
      dw.text($("server-latency"), `${doc.latency_ms.toFixed(1)} ms (the studio's round trip ` +
        `to the server, ${doc.variant} of ${doc.version}); ${pageMs.toFixed(1)} ms from this page`);
      renderBars($("probability-bars"), serverProbs);
      const form = $("correct-form");
      if (form) {
        form.hidden = false;
        $("correct-label").value = doc.label;
        dw.text($("correct-status"), "");
      }
      const login = $("correct-login");
      if (login) login.hidden = false;
    } else {
      dw.text(err, (server.body && server.body.error) || `the studio answered ${server.status}`);
    }
    if (local) {
      const top = local.probs.indexOf(Math.max(...local.probs));
      dw.text($("edge-label"), classes[top]);
      dw.text($("edge-latency"), `${local.ms.toFixed(2)} ms (session.run in this browser)`);
      renderBars($("edge-probabilities"), local.probs);
      const agree = $("edge-agree");
      if (serverProbs) {
        const dp = Math.max(...serverProbs.map((p, i) => Math.abs(p - local.probs[i])));
        const same = serverLabel === classes[top] && dp < AGREE_DP;
        agree.className = same ? "ok" : "error";
        agree.dataset.agree = String(same);
        agree.dataset.maxDp = String(dp);
        dw.text(agree, (same ? "Agree" : "Differ") + `: labels ${serverLabel} and ` +
          `${classes[top]}, largest probability difference ${dp.toExponential(2)} ` +
          `(${local.edge.variant} here, ${server.body.variant} on the server; ` +
          `they agree when the label is the same and every difference is under ${AGREE_DP}).`);
      }
    }
  }

  // --- drawing -------------------------------------------------------------------------------
  function setupCanvas() {
    const canvas = $("draw");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const [channels, height, width] = cfg.image_shape;
    let drawing = false;
    let inked = false;

    function clear() {
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      inked = false;
    }
    function at(ev) {
      const r = canvas.getBoundingClientRect();
      return [(ev.clientX - r.left) * canvas.width / r.width,
              (ev.clientY - r.top) * canvas.height / r.height];
    }
    clear();
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    canvas.addEventListener("pointerdown", (ev) => {
      ev.preventDefault();
      canvas.setPointerCapture(ev.pointerId);
      drawing = true;
      inked = true;
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = canvas.width / 10;
      const [x, y] = at(ev);
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + 0.01, y);
      ctx.stroke();
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (!drawing) return;
      const [x, y] = at(ev);
      ctx.lineTo(x, y);
      ctx.stroke();
    });
    const end = () => {
      if (!drawing) return;
      drawing = false;
      send();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);

    // The ink's bounding box, made square and centred (as the training digits are), averaged
    // into width x height cells: a cell's value is the fraction of it that is ink.
    function pixels() {
      const { width: W, height: H } = canvas;
      const img = ctx.getImageData(0, 0, W, H).data;
      let x0 = W, y0 = H, x1 = -1, y1 = -1;
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const i = 4 * (y * W + x);
          if (img[i] + img[i + 1] + img[i + 2] > 60) {
            if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
          }
        }
      }
      const box = document.createElement("canvas");
      box.width = W;
      box.height = H;
      const bctx = box.getContext("2d", { willReadFrequently: true });
      bctx.fillStyle = "#000";
      bctx.fillRect(0, 0, W, H);
      if (x1 >= 0) {
        const side = Math.max(x1 - x0 + 1, y1 - y0 + 1) * 1.1;
        const cx = (x0 + x1 + 1) / 2, cy = (y0 + y1 + 1) / 2;
        bctx.drawImage(canvas, cx - side / 2, cy - side / 2, side, side, 0, 0, W, H);
      }
      const data = bctx.getImageData(0, 0, W, H).data;
      const out = new Array(channels * height * width).fill(0);
      for (let c = 0; c < channels; c++) {
        for (let r = 0; r < height; r++) {
          const ya = Math.floor(r * H / height), yb = Math.floor((r + 1) * H / height);
          for (let k = 0; k < width; k++) {
            const xa = Math.floor(k * W / width), xb = Math.floor((k + 1) * W / width);
            let sum = 0;
            for (let y = ya; y < yb; y++) {
              for (let x = xa; x < xb; x++) {
                const i = 4 * (y * W + x);
                sum += channels === 3 ? data[i + c] : (data[i] + data[i + 1] + data[i + 2]) / 3;
              }
            }
            out[(c * height + r) * width + k] = sum / ((yb - ya) * (xb - xa) * 255);
          }
        }
      }
      return out;
    }

    function preview(row) {
      const p = $("preview");
      const pctx = p.getContext("2d");
      const img = pctx.createImageData(width, height);
      for (let i = 0; i < width * height; i++) {
        for (let c = 0; c < 3; c++) {
          const v = row[(channels === 3 ? c * width * height : 0) + i];
          img.data[4 * i + c] = Math.round(255 * v);
        }
        img.data[4 * i + 3] = 255;
      }
      pctx.putImageData(img, 0, 0);
    }

    function send() {
      if (!inked) return;
      const row = pixels();
      preview(row);
      predict({ rows: [row] }, row);
    }

    $("clear").addEventListener("click", clear);
    $("predict").addEventListener("click", send);
    $("upload").addEventListener("change", () => {
      const file = $("upload").files[0];
      if (!file) return;
      const url = URL.createObjectURL(file);
      const image = new Image();
      image.onload = () => {
        clear();
        const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
        const w = image.width * scale, h = image.height * scale;
        ctx.drawImage(image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
        URL.revokeObjectURL(url);
        // dark ink on light paper: invert, so the ink is light on black as in training
        const all = ctx.getImageData(0, 0, canvas.width, canvas.height);
        let sum = 0;
        for (let i = 0; i < all.data.length; i += 4) sum += all.data[i] + all.data[i + 1] + all.data[i + 2];
        if (sum / (all.data.length / 4) / 765 > 0.5) {
          for (let i = 0; i < all.data.length; i += 4) {
            for (let c = 0; c < 3; c++) all.data[i + c] = 255 - all.data[i + c];
          }
          ctx.putImageData(all, 0, 0);
        }
        inked = true;
        send();
      };
      image.onerror = () => dw.text($("predict-error"), "That file is not an image the browser can read.");
      image.src = url;
    });
  }

  // --- the tabular form ----------------------------------------------------------------------
  function setupForm() {
    const form = $("tabular-form");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const inputs = {};
      const row = [];
      cfg.schema.forEach((spec, i) => {
        const el = $("feature-" + i);
        if (spec.type === "categorical") {
          inputs[spec.name] = el.value === "" ? null : el.value;
          row.push(spec.categories.indexOf(el.value) + 1); // 0: missing or other
        } else {
          const v = el.value.trim() === "" ? NaN : Number(el.value);
          inputs[spec.name] = Number.isFinite(v) ? v : null;
          row.push(Number.isFinite(v) ? v : NaN);
        }
      });
      predict({ inputs }, row);
    });
  }

  // --- "that's wrong, it is ..." -------------------------------------------------------------
  function setupCorrection() {
    const form = $("correct-form");
    if (!form) return;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const status = $("correct-status");
      if (!lastId) return;
      const label = $("correct-label").value;
      const answer = await dw.post("/api/label", { id: lastId, label });
      if (answer.ok) {
        status.className = "ok";
        dw.text(status, `Thanks: ${lastId} is labeled ${label}; the next harvest learns from it.`);
      } else {
        status.className = "error";
        dw.text(status, (answer.body && answer.body.error) || `the studio answered ${answer.status}`);
      }
    });
  }

  if (cfg.kind === "image") setupCanvas(); else setupForm();
  setupCorrection();
})();
