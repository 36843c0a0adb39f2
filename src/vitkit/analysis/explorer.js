// vitkit attention explorer: draws the data that `vitkit analyze --html` put in #vitkit-data.
// Plain JavaScript and canvas/SVG (no framework, nothing fetched), for Chromium and Firefox alike.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("vitkit-data").textContent);
  const $ = (id) => document.getElementById(id);
  const SIZE = 224;  // drawn size of each image view, in CSS pixels
  const SVGNS = "http://www.w3.org/2000/svg";

  function bytes(b64) {
    const s = atob(b64), a = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    return a;
  }
  const CMAP = bytes(D.cmap);  // 256 x RGB
  const side = D.grid, P = side * side, T = D.prefix + P, H = D.heads, N = D.images.length;
  const LS = D.layers.length;
  const Q = bytes(D.attention.q), SCALE = new Float32Array(bytes(D.attention.scale).buffer);
  const TOPREFIX = bytes(D.attention.prefix);

  const state = { layer: LS - 1, head: -1, cls: false, hlHead: null,
                  query: D.images.map(() => ({ r: side >> 1, c: side >> 1 })), hover: D.images.map(() => null),
                  pos: { r: side >> 1, c: side >> 1 } };

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function headName(h) { return h < 0 ? "mean over heads" : "head " + (h + 1); }
  function rgb(v) {  // v in [0, 1] -> colour-map entry
    const i = 3 * Math.max(0, Math.min(255, Math.round(v * 255)));
    return [CMAP[i], CMAP[i + 1], CMAP[i + 2]];
  }

  // Attention of query token t of image n at stored layer j, head h (-1: mean over heads) over the patch keys,
  // as probabilities; plus the weight on the class token.
  function attention(n, j, h, t) {
    const heads = h < 0 ? [...Array(H).keys()] : [h];
    const out = new Float64Array(P);
    let toPrefix = 0;
    for (const hh of heads) {
      const row = ((n * LS + j) * H + hh) * T + t, s = SCALE[row] / 255, base = row * P;
      for (let p = 0; p < P; p++) out[p] += Q[base + p] * s / heads.length;
      toPrefix += TOPREFIX[row] / 255 / heads.length;
    }
    return { map: out, toPrefix: toPrefix };
  }
  function argmax(a) { let k = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[k]) k = i; return k; }

  // The image with a grid of values (scaled to their maximum, or to [lo, hi]) over it in the colour map.
  function drawHeat(canvas, img, values, opts) {
    const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, w, h);
    if (img) ctx.drawImage(img, 0, 0, w, h);
    const g = Math.round(Math.sqrt(values.length)), off = document.createElement("canvas");
    off.width = off.height = g;
    const octx = off.getContext("2d"), im = octx.createImageData(g, g);
    const lo = opts.lo !== undefined ? opts.lo : 0;
    const hi = opts.hi !== undefined ? opts.hi : Math.max(...values, 1e-30);
    for (let p = 0; p < values.length; p++) {
      const c = rgb((values[p] - lo) / (hi - lo));
      im.data.set([c[0], c[1], c[2], 255], 4 * p);
    }
    octx.putImageData(im, 0, 0);
    ctx.globalAlpha = img ? 0.62 : 1;
    ctx.drawImage(off, 0, 0, w, h);
    ctx.globalAlpha = 1;
    if (opts.mark) {
      ctx.lineWidth = 2.5;
      ctx.strokeStyle = "#ff2d2d";
      ctx.strokeRect(opts.mark.c * w / g + 1, opts.mark.r * h / g + 1, w / g - 2, h / g - 2);
    }
  }

  // -- header and controls ------------------------------------------------------------------------------------
  $("summary").textContent = `${D.model}: ${D.image_size[0]}x${D.image_size[1]} px images, ${side}x${side} ` +
    `patches of ${D.pixels_per_token[0]} px, ${D.num_layers} layers x ${H} heads; per-head attention stored for ` +
    (LS ? `layer${LS > 1 ? "s" : ""} ${D.layers.join(", ")}` : "no layer") + `; ${N} image${N > 1 ? "s" : ""}.`;
  for (const note of D.notes) $("notes").appendChild(el("p", { class: "note" }, note));
  D.layers.forEach((l, j) => $("layer").appendChild(el("option", { value: j }, "layer " + l)));
  $("layer").value = state.layer;
  $("layer").disabled = LS === 0;
  for (let h = -1; h < H; h++) $("head").appendChild(el("option", { value: h }, headName(h)));
  if (!D.prefix) $("cls-box").hidden = true;
  const sc = $("scale").getContext("2d");
  for (let x = 0; x < 256; x++) { const c = rgb(x / 255); sc.fillStyle = `rgb(${c})`; sc.fillRect(x, 0, 1, 12); }

  // -- the images ---------------------------------------------------------------------------------------------
  let loaded = 0;
  const views = D.images.map((info, n) => {
    const card = el("article", { class: "card", "aria-label": "image " + (n + 1) });
    card.appendChild(el("h3", {}, "Image " + (n + 1)));
    const pair = el("div", { class: "pair" });
    const mk = (cls, label, focus) => {
      const fig = el("figure"), cv = el("canvas", { class: "view " + cls, width: SIZE, height: SIZE, role: "img",
                                                   "aria-label": label });
      if (focus) cv.tabIndex = 0;
      const cap = el("figcaption");
      fig.append(cv, cap);
      pair.appendChild(fig);
      return [cv, cap];
    };
    const [roll, rollCap] = mk("rollout", `attention rollout over image ${n + 1}`, false);
    const [att, attCap] = mk("attention", `attention of the query patch on image ${n + 1}`, true);
    rollCap.textContent = "attention rollout (all layers, mean over heads)";
    card.appendChild(pair);
    if (info.top) {
      const ol = el("ol", { class: "top5", "aria-label": "top classes" });
      for (const t of info.top) {
        const li = el("li", {}, `${t.name}: ${(100 * t.p).toFixed(1)}%`);
        li.appendChild(el("span", { class: "bar", style: `width:${Math.round(60 * t.p)}px`, "aria-hidden": "true" }));
        ol.appendChild(li);
      }
      card.appendChild(ol);
    }
    if (info.true !== null) {
      const ok = info.top ? info.top[0].name === String(info.true) : null;
      card.appendChild(el("p", { class: "truth" + (ok === null ? "" : ok ? " ok" : " wrong") }, "true class: " +
        info.true));
    }
    $("images").appendChild(card);
    const img = new Image();
    const v = { img: img, roll: roll, att: att, attCap: attCap };
    img.onload = () => {
      drawImageViews(n);
      if (++loaded === N) document.body.dataset.ready = "1";  // every canvas drawn: what tests wait for
    };
    img.src = info.src;
    const patchAt = (e) => {
      const r = e.target.getBoundingClientRect();
      return { r: Math.min(side - 1, Math.floor((e.clientY - r.top) / r.height * side)),
               c: Math.min(side - 1, Math.floor((e.clientX - r.left) / r.width * side)) };
    };
    for (const cv of [roll, att]) {
      cv.addEventListener("mousemove", (e) => { state.hover[n] = patchAt(e); drawImageViews(n); });
      cv.addEventListener("mouseleave", () => { state.hover[n] = null; drawImageViews(n); });
      cv.addEventListener("click", (e) => { state.query[n] = patchAt(e); state.hover[n] = null; drawImageViews(n); });
    }
    att.addEventListener("keydown", (e) => {
      const q = state.query[n], step = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0],
                                         ArrowDown: [1, 0] }[e.key];
      if (!step) return;
      e.preventDefault();
      state.query[n] = { r: Math.max(0, Math.min(side - 1, q.r + step[0])),
                         c: Math.max(0, Math.min(side - 1, q.c + step[1])) };
      state.hover[n] = null;
      drawImageViews(n);
      $("status").textContent = att.getAttribute("aria-label");
    });
    return v;
  });

  function drawImageViews(n) {
    const v = views[n], q = state.hover[n] || state.query[n];
    if (!v.img.complete) return;
    v.att.dataset.query = `${q.r},${q.c}`;
    drawHeat(v.roll, v.img, D.images[n].rollout, { mark: state.cls ? null : q });
    if (!LS) {
      drawHeat(v.att, v.img, new Float64Array(P), { hi: 1 });
      v.attCap.textContent = "no per-head attention stored (rerun with --layers)";
      return;
    }
    const t = state.cls ? 0 : D.prefix + q.r * side + q.c, a = attention(n, state.layer, state.head, t);
    drawHeat(v.att, v.img, a.map, { mark: state.cls ? null : q });
    const k = argmax(a.map), who = state.cls ? "class token" : `query patch row ${q.r + 1}, column ${q.c + 1}`;
    const text = `${who}; layer ${D.layers[state.layer]}, ${headName(state.head)}; maximum ` +
      `${(100 * a.map[k]).toFixed(1)}% at row ${Math.floor(k / side) + 1}, column ${k % side + 1}` +
      (D.prefix ? `; ${(100 * a.toPrefix).toFixed(0)}% to the class token` : "");
    v.attCap.textContent = text;
    v.att.setAttribute("aria-label", `Attention on image ${n + 1} of the ${text}. Arrow keys move the query.`);
  }
  function drawAllImages() { for (let n = 0; n < N; n++) drawImageViews(n); }

  $("layer").addEventListener("change", () => { state.layer = +$("layer").value; drawAllImages(); });
  $("head").addEventListener("change", () => {
    state.head = +$("head").value;
    highlightHead(state.head < 0 ? null : state.head);
    drawAllImages();
  });
  $("cls").addEventListener("change", () => { state.cls = $("cls").checked; drawAllImages(); });

  // -- mean attention distance (SVG scatter) -------------------------------------------------------------------
  const svg = $("distance"), W = +svg.getAttribute("width"), HT = +svg.getAttribute("height");
  const m = { l: 48, r: 12, t: 12, b: 40 }, L = D.num_layers;
  const ymax = Math.max(Math.max(...D.distance.flat()) * 1.05, Math.max(...D.image_size) / 2);
  const sx = (l) => m.l + (l - 0.5) / L * (W - m.l - m.r), sy = (y) => HT - m.b - y / ymax * (HT - m.t - m.b);
  const sv = (tag, attrs, text) => {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  sv("line", { x1: m.l, y1: HT - m.b, x2: W - m.r, y2: HT - m.b, stroke: "#333" });
  sv("line", { x1: m.l, y1: m.t, x2: m.l, y2: HT - m.b, stroke: "#333" });
  for (let l = 1; l <= L; l++) sv("text", { x: sx(l), y: HT - m.b + 14, "text-anchor": "middle" }, l);
  const mag = Math.pow(10, Math.floor(Math.log10(ymax / 4))), step = [1, 2, 5, 10].find((f) => f * mag >= ymax / 5) * mag;
  for (let y = 0; y <= ymax; y += step) sv("text", { x: m.l - 5, y: sy(y) + 4, "text-anchor": "end" }, +y.toFixed(6));
  sv("text", { x: (W + m.l) / 2, y: HT - 6, "text-anchor": "middle" }, "network depth (layer)");
  sv("text", { x: 12, y: (HT - m.b) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(HT - m.b) / 2})` },
     "mean attention distance (px)");
  const points = [];
  D.distance.forEach((row, l) => row.forEach((d, h) => {
    const jitter = H > 1 ? (h / (H - 1) - 0.5) * 0.5 * (W - m.l - m.r) / L : 0;
    const c = sv("circle", { cx: sx(l + 1) + jitter, cy: sy(d), r: 4.5, tabindex: -1, role: "button",
                            fill: `hsl(${Math.round(300 * h / Math.max(H - 1, 1))}, 70%, 45%)`,
                            "aria-label": `layer ${l + 1}, head ${h + 1}: ${d.toFixed(1)} pixels` });
    c.appendChild(document.createElementNS(SVGNS, "title")).textContent = `layer ${l + 1}, head ${h + 1}: ` +
      `${d.toFixed(1)} px`;
    c.dataset.layer = l + 1;
    c.dataset.head = h;
    const pick = () => selectHead(l + 1, h, d);
    c.addEventListener("mouseenter", pick);
    c.addEventListener("focus", pick);
    c.addEventListener("click", pick);
    points.push(c);
  }));
  // One tab stop for the whole chart (a roving tabindex): the arrow keys move between layers and heads.
  points[points.length - 1].setAttribute("tabindex", 0);
  svg.addEventListener("keydown", (e) => {
    const i = points.indexOf(document.activeElement);
    const step = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowDown: [0, -1], ArrowUp: [0, 1] }[e.key];
    if (i < 0 || !step) return;
    e.preventDefault();
    const l = Math.max(0, Math.min(L - 1, Math.floor(i / H) + step[0]));
    const next = points[l * H + Math.max(0, Math.min(H - 1, i % H + step[1]))];
    points[i].setAttribute("tabindex", -1);
    next.setAttribute("tabindex", 0);
    next.focus();
  });
  function highlightHead(h) {
    state.hlHead = h;
    for (const c of points) {
      c.classList.toggle("hl", h !== null && +c.dataset.head === h);
      c.classList.toggle("dim", h !== null && +c.dataset.head !== h);
    }
  }
  function selectHead(layer, h, d) {
    highlightHead(h);
    const j = D.layers.indexOf(layer);
    let text = `layer ${layer}, head ${h + 1}: mean attention distance ${d.toFixed(1)} px. `;
    if (j >= 0) {
      state.layer = j;
      state.head = h;
      $("layer").value = j;
      $("head").value = h;
      drawAllImages();
      text += "Its attention is shown on the images above.";
    } else {
      text += `This page does not store layer ${layer}'s attention (rerun with --layers ${layer}).`;
    }
    $("distance-info").textContent = text;
  }

  // -- position-embedding similarity ---------------------------------------------------------------------------
  // Drawn at one pixel per value on an offscreen canvas, then scaled up whole so that the gaps stay even.
  const SIM = bytes(D.posemb), pe = $("posemb"), gap = 1, cell = side + gap, base = side * cell - gap;
  const zoom = Math.max(1, Math.round(360 / base)), grid = document.createElement("canvas");
  grid.width = grid.height = base;
  pe.width = pe.height = base * zoom;
  {
    const gctx = grid.getContext("2d"), im = gctx.createImageData(base, base);
    for (let i = 0; i < im.data.length; i += 4) im.data.set([255, 255, 255, 255], i);
    for (let p = 0; p < P; p++) {
      const pr = Math.floor(p / side), pc = p % side;
      for (let k = 0; k < P; k++) {
        const x = pc * cell + k % side, y = pr * cell + Math.floor(k / side), c = rgb(SIM[p * P + k] / 255);
        im.data.set([c[0], c[1], c[2], 255], 4 * (y * base + x));
      }
    }
    gctx.putImageData(im, 0, 0);
  }
  function drawPosemb() {
    const ctx = pe.getContext("2d"), s = state.pos;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(grid, 0, 0, pe.width, pe.height);
    ctx.strokeStyle = "#ff2d2d";
    ctx.lineWidth = 2;
    ctx.strokeRect(s.c * cell * zoom - 1, s.r * cell * zoom - 1, side * zoom + 2, side * zoom + 2);
    const p = s.r * side + s.c, one = new Float64Array(P);
    for (let k = 0; k < P; k++) one[k] = SIM[p * P + k] / 255 * 2 - 1;
    drawHeat($("posemb-one"), null, one, { lo: -1, hi: 1, mark: s });
    const text = `position row ${s.r + 1}, column ${s.c + 1}: cosine similarity of its embedding with every ` +
      "position's (dark purple -1, yellow 1)";
    $("posemb-info").textContent = text;
    $("posemb-one").setAttribute("aria-label", text);
    pe.dataset.pos = `${s.r},${s.c}`;
  }
  pe.addEventListener("click", (e) => {
    const r = pe.getBoundingClientRect();
    state.pos = { r: Math.min(side - 1, Math.floor((e.clientY - r.top) / r.height * side)),
                  c: Math.min(side - 1, Math.floor((e.clientX - r.left) / r.width * side)) };
    drawPosemb();
  });
  pe.addEventListener("keydown", (e) => {
    const step = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] }[e.key];
    if (!step) return;
    e.preventDefault();
    state.pos = { r: Math.max(0, Math.min(side - 1, state.pos.r + step[0])),
                  c: Math.max(0, Math.min(side - 1, state.pos.c + step[1])) };
    drawPosemb();
    $("status").textContent = $("posemb-info").textContent;
  });
  drawPosemb();

  // -- embedding filters ---------------------------------------------------------------------------------------
  const F = D.filters, fc = $("filters");
  if (F.skipped) {
    $("filters-info").textContent = "Not shown: " + F.skipped;
    fc.hidden = true;
  } else {
    const cols = Math.min(7, F.k), rows = Math.ceil(F.k / cols), px = bytes(F.rgb);
    fc.width = cols * (F.w + 1) - 1;
    fc.height = rows * (F.h + 1) - 1;
    fc.style.width = Math.max(fc.width, Math.round(420 / fc.width) * fc.width) + "px";
    const ctx = fc.getContext("2d"), im = ctx.createImageData(fc.width, fc.height);
    for (let i = 0; i < im.data.length; i += 4) im.data.set([255, 255, 255, 255], i);
    for (let f = 0; f < F.k; f++) {
      const ox = (f % cols) * (F.w + 1), oy = Math.floor(f / cols) * (F.h + 1);
      for (let y = 0; y < F.h; y++) for (let x = 0; x < F.w; x++) {
        const s = 3 * ((f * F.h + y) * F.w + x);
        im.data.set([px[s], px[s + 1], px[s + 2], 255], 4 * ((oy + y) * fc.width + ox + x));
      }
    }
    ctx.putImageData(im, 0, 0);
    const explained = F.ratio.reduce((a, b) => a + b, 0);
    $("filters-info").textContent = `The first ${F.k} principal components of the patch-embedding filters ` +
      `(${(100 * explained).toFixed(0)}% of their variance), each scaled to its own range; read row by row.`;
    fc.setAttribute("aria-label", $("filters-info").textContent);
  }
})();
