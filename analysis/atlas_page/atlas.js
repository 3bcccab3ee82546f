// The bottleneck atlas: plain JavaScript over window.ATLAS_DATA (data.js, written by
// analysis.atlas). Opens from file:// with no network; served by analysis.serve, the walk
// sliders decode live through the run's model (api/decode).
"use strict";

(function () {
  const D = window.ATLAS_DATA;
  const $ = (id) => document.getElementById(id);

  function decode(b64, Type) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return new Type(bytes.buffer);
  }

  const n = D.n;
  const coords = decode(D.coords, Float32Array);
  const rows = decode(D.rows, Int32Array);
  const imageId = decode(D.image_id, Float64Array);
  const annId = decode(D.ann_id, Float64Array);
  const truth = decode(D.truth, Int16Array);           // (n, J, 3): x*4, y*4, v
  const predicted = decode(D.predicted, Int16Array);   // (n, J, 2): x*4, y*4
  const bare = decode(D.predicted_without_skips, Int16Array);
  const neighbours = decode(D.neighbours, Int32Array);
  const thumbIndex = decode(D.thumbs.index, Int32Array);
  const clusters = {};
  for (const k of D.ks) clusters[k] = decode(D.clusters[k], Uint8Array);
  const colourings = {};
  for (const [name, c] of Object.entries(D.colourings)) {
    colourings[name] = Object.assign({}, c, { data: decode(c.values, Float32Array) });
  }
  const J = truth.length / (3 * n);
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                   "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const LEFT = "rgb(255,140,0)", RIGHT = "rgb(0,160,255)", CENTRE = "rgb(80,220,80)";

  // ---- the map --------------------------------------------------------------------
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, MARGIN = 12;
  let lo = [Infinity, Infinity], hi = [-Infinity, -Infinity];
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < 2; a++) {
      lo[a] = Math.min(lo[a], coords[2 * i + a]);
      hi[a] = Math.max(hi[a], coords[2 * i + a]);
    }
  }
  const span = [Math.max(hi[0] - lo[0], 1e-9), Math.max(hi[1] - lo[1], 1e-9)];
  const px = new Float32Array(n), py = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    px[i] = MARGIN + (coords[2 * i] - lo[0]) / span[0] * (W - 2 * MARGIN);
    py[i] = H - MARGIN - (coords[2 * i + 1] - lo[1]) / span[1] * (H - 2 * MARGIN);
  }
  // A grid of cells -> points, for hover look-ups in constant time.
  const CELL = 8, GW = Math.ceil(W / CELL), GH = Math.ceil(H / CELL);
  const grid = new Map();
  for (let i = 0; i < n; i++) {
    const key = Math.floor(px[i] / CELL) + GW * Math.floor(py[i] / CELL);
    if (!grid.has(key)) grid.set(key, []);
    grid.get(key).push(i);
  }
  function pointAt(x, y, radius) {
    let best = -1, bestD = radius * radius;
    const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    for (let gx = cx - 1; gx <= cx + 1; gx++) {
      for (let gy = cy - 1; gy <= cy + 1; gy++) {
        if (gx < 0 || gy < 0 || gx >= GW || gy >= GH) continue;
        for (const i of grid.get(gx + GW * gy) || []) {
          const d = (px[i] - x) ** 2 + (py[i] - y) ** 2;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  function ramp(t) {            // a viridis-like ramp, t in [0, 1]
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
    const a = stops[Math.floor(x)], b = stops[Math.min(Math.floor(x) + 1, stops.length - 1)];
    const f = x - Math.floor(x);
    return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",")})`;
  }

  let colourBy = `cluster K=${D.best_k}`;
  let selected = -1;

  function colourOf() {       // -> [per-point colour index, colours, legend html]
    const index = new Int32Array(n);
    if (colourBy.startsWith("cluster K=")) {
      const k = +colourBy.slice(10), lab = clusters[k];
      for (let i = 0; i < n; i++) index[i] = lab[i] % PALETTE.length;
      const sizes = new Array(k).fill(0);
      for (let i = 0; i < n; i++) sizes[lab[i]]++;
      return [index, PALETTE, sizes.map((s, c) => swatch(PALETTE[c % 10], `cluster ${c} (${s})`)).join("")];
    }
    const c = colourings[colourBy];
    const v = c.data;
    if (c.kind === "classes") {
      const colours = PALETTE.concat(["#cccccc"]);
      for (let i = 0; i < n; i++) index[i] = Number.isNaN(v[i]) ? colours.length - 1 : v[i] % 10;
      return [index, colours, c.classes.map((name, k) => swatch(PALETTE[k % 10], name)).join("")
              + swatch("#cccccc", "none")];
    }
    let vmin = Infinity, vmax = -Infinity;
    for (let i = 0; i < n; i++) if (!Number.isNaN(v[i])) { vmin = Math.min(vmin, v[i]); vmax = Math.max(vmax, v[i]); }
    const colours = [];
    for (let b = 0; b < 32; b++) colours.push(ramp(b / 31));
    colours.push("#cccccc");
    for (let i = 0; i < n; i++) {
      index[i] = Number.isNaN(v[i]) ? 32 : Math.round((v[i] - vmin) / Math.max(vmax - vmin, 1e-12) * 31);
    }
    return [index, colours, `${swatch(ramp(0), fmt(vmin))} to ${swatch(ramp(1), fmt(vmax))}`
            + `${swatch("#cccccc", "undefined")} — ${c.legend}`];
  }
  function swatch(colour, text) {
    return `<span class="swatch" style="background:${colour}"></span>${escape(text)}`;
  }
  function fmt(v) { return Number.isFinite(v) ? (+v).toPrecision(3) : "-"; }
  function escape(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function drawMap() {
    const [index, colours, legend] = colourOf();
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);
    const size = n > 20000 ? 2 : 4;
    for (let c = 0; c < colours.length; c++) {
      ctx.fillStyle = colours[c];
      for (let i = 0; i < n; i++) {
        if (index[i] === c) ctx.fillRect(px[i] - size / 2, py[i] - size / 2, size, size);
      }
    }
    if (selected >= 0) {
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(px[selected], py[selected], 7, 0, 2 * Math.PI);
      ctx.stroke();
    }
    $("legend").innerHTML = legend;
  }

  // ---- crops and skeletons --------------------------------------------------------
  const sheets = {};
  function sheet(k) {
    if (!sheets[k]) {
      const img = new Image();
      img.onload = () => redrawViews();
      img.src = D.thumbs.sheets[k];
      sheets[k] = img;
    }
    return sheets[k];
  }
  function drawCrop(c, i) {
    const g = c.getContext("2d");
    g.fillStyle = "#808080";
    g.fillRect(0, 0, c.width, c.height);
    const t = thumbIndex[i];
    c.dataset.row = rows[i];
    c.dataset.thumb = t;
    if (t < 0) return;
    const per = D.thumbs.per_row * D.thumbs.per_row, s = D.thumbs.size;
    const img = sheet(Math.floor(t / per)), k = t % per;
    if (img.complete && img.naturalWidth) {
      g.drawImage(img, (k % D.thumbs.per_row) * s, Math.floor(k / D.thumbs.per_row) * s, s, s,
                  0, 0, c.width, c.height);
    }
  }
  function sideColour(j) { return j === 0 ? CENTRE : (j % 2 === 1 ? LEFT : RIGHT); }
  // joints: array of [x, y, v] in crop pixels (v > 0 drawn).
  function drawSkeleton(c, joints) {
    const g = c.getContext("2d"), scale = c.width / D.crop_size;
    g.lineWidth = 2;
    for (const [a, b] of D.skeleton) {
      if (joints[a][2] > 0 && joints[b][2] > 0) {
        g.strokeStyle = sideColour(b);
        g.beginPath();
        g.moveTo(joints[a][0] * scale, joints[a][1] * scale);
        g.lineTo(joints[b][0] * scale, joints[b][1] * scale);
        g.stroke();
      }
    }
    for (let j = 0; j < joints.length; j++) {
      if (joints[j][2] <= 0) continue;
      g.fillStyle = sideColour(j);
      g.beginPath();
      g.arc(joints[j][0] * scale, joints[j][1] * scale, 3, 0, 2 * Math.PI);
      if (joints[j][2] >= 2) g.fill(); else { g.strokeStyle = sideColour(j); g.stroke(); }
    }
  }
  function jointsOf(array, i, withV) {
    const out = [];
    for (let j = 0; j < J; j++) {
      if (withV) out.push([array[(i * J + j) * 3] / 4, array[(i * J + j) * 3 + 1] / 4, array[(i * J + j) * 3 + 2]]);
      else out.push([array[(i * J + j) * 2] / 4, array[(i * J + j) * 2 + 1] / 4, 2]);
    }
    return out;
  }
  function describe(i) {
    const k = colourBy.startsWith("cluster K=") ? +colourBy.slice(10) : D.best_k;
    return `sample ${i}: split row ${rows[i]}, image ${imageId[i]}, annotation ${annId[i]}, `
      + `cluster ${clusters[k][i]} of K=${k}`
      + (colourings.pck ? `, PCK ${fmt(colourings.pck.data[i])}` : "");
  }

  // ---- hover and selection --------------------------------------------------------
  const tooltip = $("tooltip");
  let hovered = -1;
  canvas.addEventListener("mousemove", (e) => {
    const r = canvas.getBoundingClientRect();
    const x = (e.clientX - r.left) * W / r.width, y = (e.clientY - r.top) * H / r.height;
    const i = pointAt(x, y, 8);
    hovered = i;
    if (i < 0) { tooltip.hidden = true; return; }
    tooltip.hidden = false;
    tooltip.dataset.row = rows[i];
    tooltip.dataset.sample = i;
    tooltip.innerHTML = `<div class="tip-text">${escape(describe(i))}</div>`;
    const c = document.createElement("canvas");
    c.width = c.height = 128;
    c.className = "tip-crop";
    tooltip.appendChild(c);
    drawCrop(c, i);
    drawSkeleton(c, jointsOf(truth, i, true));
    tooltip.style.left = `${Math.min(px[i] + 12, W - 140)}px`;
    tooltip.style.top = `${Math.min(py[i] + 12, H - 170)}px`;
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; hovered = -1; });
  canvas.addEventListener("click", (e) => {
    const r = canvas.getBoundingClientRect();
    const i = pointAt((e.clientX - r.left) * W / r.width, (e.clientY - r.top) * H / r.height, 8);
    if (i >= 0) select(i);
  });

  function select(i) {
    selected = i;
    drawMap();
    redrawViews();
    $("live-row").textContent = live ? `latent of sample ${i}` : "";
    if (live) requestFrame();
  }
  function redrawViews() {
    if (selected < 0) return;
    const i = selected;
    $("sample-info").textContent = describe(i);
    $("sample-panel").dataset.sample = i;
    const views = [["view-truth", jointsOf(truth, i, true)], ["view-pred", jointsOf(predicted, i, false)],
                   ["view-bare", jointsOf(bare, i, false)]];
    for (const [id, joints] of views) { drawCrop($(id), i); drawSkeleton($(id), joints); }
    const box = $("neighbours");
    box.innerHTML = "";
    for (let k = 0; k < neighbours.length / n; k++) {
      const j = neighbours[i * (neighbours.length / n) + k];
      if (j < 0) continue;
      const c = document.createElement("canvas");
      c.width = c.height = 72;
      c.title = describe(j);
      c.addEventListener("click", () => select(j));
      box.appendChild(c);
      drawCrop(c, j);
      drawSkeleton(c, jointsOf(truth, j, true));
    }
    drawSwapPairs();
  }

  // ---- walks ------------------------------------------------------------------------
  const walks = D.walks;
  let live = false;
  const sliders = [];
  function setupSliders() {
    const box = $("sliders");
    box.innerHTML = "";
    sliders.length = 0;
    const mid = walks.steps.indexOf(0);
    walks.components.forEach((c, ci) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "range";
      input.id = `slider-${c}`;
      input.dataset.component = c;
      if (live) { input.min = -3; input.max = 3; input.step = 0.25; input.value = 0; }
      else { input.min = 0; input.max = walks.steps.length - 1; input.step = 1; input.value = mid; }
      const value = document.createElement("span");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = `PC ${c}`;
      label.append(name, input, value);
      box.appendChild(label);
      input.addEventListener("input", () => onSlider(ci));
      sliders.push([input, value]);
    });
    const skips = $("walk-skips");
    skips.innerHTML = "";
    const modes = live ? ["own", "reference", "none", "sample"] : Object.keys(walks.frames);
    const names = { own: "the selected sample's", sample: "sample B's (latent swap):" };
    for (const m of modes) skips.add(new Option(names[m] || m, m));
    skips.onchange = () => (live ? requestFrame() : showFrame(0, mid));
    $("skips-sample").hidden = !live;
    $("skips-sample").max = n - 1;
    $("skips-sample").onchange = () => { skips.value = "sample"; requestFrame(); };
    $("walk-mode").textContent = live
      ? "Live: every slider adds its component (in sqrt(eigenvalue)) to the selected sample's latent (or the reference sample's), decoded by the run's model."
      : `Precomputed: the walks from the mean, decoded with the skip features of sample ${walks.reference} (nearest the mean) or without skips. Serve the atlas (python -m analysis.serve) to combine sliders live.`;
    if (!live) showFrame(0, mid);
  }
  function onSlider(ci) {
    if (live) { sliders[ci][1].textContent = ` ${(+sliders[ci][0].value).toFixed(2)}`; requestFrame(); return; }
    const mid = walks.steps.indexOf(0);
    sliders.forEach(([input, value], k) => { if (k !== ci) { input.value = mid; value.textContent = ""; } });
    showFrame(ci, +sliders[ci][0].value);
  }
  function showFrame(ci, j) {
    const mode = $("walk-skips").value || Object.keys(walks.frames)[0];
    const frame = walks.frames[mode][ci][j];
    const c = walks.components[ci], step = walks.steps[j];
    sliders[ci][1].textContent = ` ${step >= 0 ? "+" : ""}${step}`;
    showDecoded(frame.png, frame.keypoints, `${mode}:${c}:${step}`,
                `PC ${c} at ${step} sqrt(lambda) from the mean (${mode})`);
  }
  function showDecoded(png, keypoints, key, caption) {
    $("frame-heatmap").src = png;
    const c = $("frame-skeleton");
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
    drawSkeleton(c, keypoints.map(([x, y]) => [x, y, 2]));
    $("frame").dataset.frame = key;
    $("frame-caption").textContent = caption;
  }
  let pending = null;
  function requestFrame() {
    const row = selected >= 0 ? selected : walks.reference;
    const pcs = sliders.map(([input]) => `${input.dataset.component}:${input.value}`).join(",");
    const skips = $("walk-skips").value === "sample" ? String(+$("skips-sample").value || 0)
      : $("walk-skips").value;
    const url = `api/decode?sample=${row}&skips=${skips}&pc=${pcs}`;
    if (pending) pending.abort();
    pending = new AbortController();
    fetch(url, { signal: pending.signal }).then((r) => r.json()).then((answer) => {
      if (answer.error) { $("frame-caption").textContent = answer.error; return; }
      showDecoded(answer.png, answer.keypoints, `live:${row}:${skips}:${pcs}`,
                  `sample ${row}, ${skips} skips, ${pcs}`);
    }).catch((err) => { if (err.name !== "AbortError") $("frame-caption").textContent = String(err); });
  }

  // ---- swap, tables -------------------------------------------------------------------
  function table(id, header, rowsOut, classes) {
    const t = $(id);
    t.innerHTML = "<tr>" + header.map((h) => `<th>${escape(h)}</th>`).join("") + "</tr>"
      + rowsOut.map((r, k) => "<tr>" + r.map((v, j) => {
        const cls = classes ? classes(k, j, v) : "";
        return `<td${cls ? ` class="${cls}"` : ""}>${escape(typeof v === "number" ? fmt(v) : (v ?? "-"))}</td>`;
      }).join("") + "</tr>").join("");
  }
  function drawSwapPairs() {
    const box = $("swap-pairs");
    box.innerHTML = "";
    for (const p of D.swap.shown) {
      const fig = document.createElement("figure");
      const cells = [[p.a, jointsOf(truth, p.a, true), "A"], [p.b, jointsOf(truth, p.b, true), "B"],
                     [p.b, p.swapped.map(([x, y]) => [x, y, 2]), "A latent + B skips"],
                     [p.a, p.bare.map(([x, y]) => [x, y, 2]), "A latent, no skips"]];
      for (const [i, joints, name] of cells) {
        const c = document.createElement("canvas");
        c.width = c.height = 96;
        c.title = name;
        fig.appendChild(c);
        drawCrop(c, i);
        drawSkeleton(c, joints);
      }
      const cap = document.createElement("figcaption");
      cap.textContent = `A = sample ${p.a}, B = sample ${p.b}: truth A, truth B, A latent + B skips, A latent without skips`;
      fig.appendChild(cap);
      box.appendChild(fig);
    }
  }
  function fillTables() {
    const groups = Object.keys(Object.values(D.swap.scores)[0]["vs A"]);
    const swapRows = [];
    for (const [name, s] of Object.entries(D.swap.scores)) {
      for (const who of ["vs A", "vs B"]) swapRows.push([name, who, ...groups.map((g) => s[who][g])]);
    }
    table("swap-scores", ["decoding", "against", ...groups], swapRows);
    table("claims", ["claim", "thesis", "measure", "value", "rule", "verdict"],
          D.claims.map((c) => [c.claim, c.thesis, c.measure, c.value, c.rule, c.verdict]),
          (k, j, v) => (j === 5 ? String(v).replace(" ", "-") : ""));
    const k = D.ks.includes(2) ? 2 : D.best_k;
    $("profiles-title").textContent = `Cluster profiles at K = ${k} (means over each cluster)`;
    const profiles = D.profiles[k];
    const names = Object.keys(profiles[0]).filter((f) => !["cluster", "size", "labelled_histogram"].includes(f));
    table("profiles", ["cluster", "size", ...names], profiles.map((p) => [p.cluster, p.size, ...names.map((f) => p[f])]));
    const factorRows = Object.entries(D.factors).map(([name, f]) => [name, f.classes ? "classes" : "number",
      f.ami[D.best_k], ...Object.values(f.probes).map((p) => (p.score === null ? "-" : `${fmt(p.score)} / ${fmt(p.baseline)}`))]);
    const probeKs = Object.keys(Object.values(D.factors)[0]?.probes || {});
    table("factors", ["factor", "kind", `AMI at K = ${D.best_k}`, ...probeKs.map((p) => `probe, first ${p} PCs (score / baseline)`)],
          factorRows.length ? factorRows : [["the data records no factors", "", ""]]);
  }

  // ---- start --------------------------------------------------------------------------
  function start() {
    $("title").textContent = D.title;
    const r = D.run;
    $("run").textContent = `${r.workdir} (${r.label}, epoch ${r.epoch}), ${r.split} split, layer ${r.layer}, subset ${r.subset}; `
      + `map: PC 1 and 2 (${(100 * (D.explained[0] + D.explained[1])).toFixed(1)} % of the variance); `
      + `${D.thumbs.count} of ${n} samples have a crop thumbnail`;
    $("count").textContent = `${n} samples`;
    $("count").dataset.count = n;
    $("neighbour-note").textContent = `(Euclidean, first ${D.neighbour_components} principal components)`;
    const select_ = $("colour-by");
    for (const k of D.ks) select_.add(new Option(`cluster K=${k}`, `cluster K=${k}`));
    for (const name of Object.keys(colourings)) select_.add(new Option(name, name));
    select_.value = colourBy;
    select_.onchange = () => { colourBy = select_.value; drawMap(); };
    drawMap();
    fillTables();
    setupSliders();
    select(walks.reference);
    if (location.protocol.startsWith("http")) {
      fetch("api/health").then((r) => r.json()).then((h) => {
        if (h.live) { live = true; setupSliders(); select(selected); }
      }).catch(() => {});
    }
    window.atlas = {
      n, ready: true,
      screenOf: (i) => ({ x: px[i] * canvas.getBoundingClientRect().width / W,
                          y: py[i] * canvas.getBoundingClientRect().height / H }),
      hovered: () => hovered, selected: () => selected, live: () => live, select,
    };
  }
  start();
})();
