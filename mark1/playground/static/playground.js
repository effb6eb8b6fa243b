// The Mark I playground's page: plain JavaScript and canvas, no library, nothing fetched from
// elsewhere. It talks to its server over one WebSocket (/ws): commands out, frames in (see
// mark1/playground/protocol.py for the messages).
"use strict";
(function () {
  const M1 = {            // the page's state, also read by the tests
    tab: null, welcome: null, frame: null, frames: 0, curve: [], errors: [], xor: null,
    view: "trial", sent: 0, explained: null, connected: false,
  };
  window.M1 = M1;
  const $ = (id) => document.getElementById(id);
  const SIZE = 20;
  let ws = null;
  let nextId = 1;
  const pending = {};     // id -> command type, for the answers that explain something
  const drawing = new Float32Array(SIZE * SIZE);
  let tool = "draw";
  let lastTrial = -1;
  let draggingSlider = null;

  // ------------------------------------------------------------------ the socket
  function send(type, fields) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return null;
    const id = nextId++;
    pending[id] = type;
    ws.send(JSON.stringify(Object.assign({ type: type, id: id }, fields || {})));
    M1.sent++;
    return id;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(scheme + "://" + location.host + "/ws");
    ws.onopen = () => { M1.connected = true; status("connected"); };
    ws.onclose = () => {
      M1.connected = false;
      status("disconnected: the server stopped or this tab was refused; reload the page", true);
    };
    ws.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      const handler = HANDLERS[message.type];
      if (handler) handler(message);
    };
  }

  const HANDLERS = {
    welcome: onWelcome,
    frame: onFrame,
    xor: onXor,
    busy: (m) => status(m.what + "…"),
    error: (m) => {
      M1.errors.push(m.message);
      status(m.message, true);
      (m.re || []).forEach((id) => delete pending[id]);
    },
  };

  let statusTimer = null;
  function status(text, bad) {
    const el = $("status");
    el.textContent = text;
    el.className = "status" + (bad ? " error" : "");
    clearTimeout(statusTimer);
    if (bad) statusTimer = setTimeout(() => showStatus(), 5000);
  }

  function showStatus() {
    const f = M1.frame;
    if (!f) return;
    const speed = f.speed === "1960" ? "at the 1960 machine's pace" :
      f.speed === "max" ? "as fast as it goes" : "at " + f.speed + " trials/s";
    status((f.playing ? "playing " + speed : "paused") + " · tab " + M1.tab.slice(0, 6));
  }

  // ------------------------------------------------------------------ decoding
  function bytes(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function bits(text, n) {
    const b = bytes(text);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = (b[i >> 3] >> (7 - (i & 7))) & 1;
    return out;
  }
  function fmt(x, digits) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits === undefined ? 2 : digits);
  }
  function machineTime(seconds) {
    if (!(seconds >= 0)) return "–";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + Math.floor(seconds % 60) + " s";
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + (minutes % 60) + " min";
    return Math.floor(hours / 24) + " d " + (hours % 24) + " h";
  }

  // ------------------------------------------------------------------ controls
  function option(select, value, text) {
    const o = document.createElement("option");
    o.value = value; o.textContent = text;
    select.appendChild(o);
  }

  function onWelcome(w) {
    M1.welcome = w;
    M1.tab = w.tab;
    Object.keys(w.tasks).forEach((k) => option($("task"), k, k));
    Object.keys(w.presets).forEach((k) => option($("preset"), k, k));
    w.rules.forEach((k) => option($("rule"), k, k));
    w.speeds.forEach((k) => option($("speed"), k, k === "1960" ? "the 1960 machine's pace" :
      k === "max" ? "as fast as it goes" : k + " trials/s"));
    $("speed").value = w.default_speed;
    const box = $("sliders");
    Object.entries(w.sliders).forEach(([name, s]) => {
      const div = document.createElement("div");
      div.className = "slider";
      div.innerHTML = '<span class="name"></span><span class="value"></span>' +
        '<input type="range">';
      div.querySelector(".name").textContent = s.label;
      div.title = name + " (" + s.unit + ")";
      const input = div.querySelector("input");
      input.id = "slider-" + name;
      input.min = s.low; input.max = s.high; input.step = s.step;
      input.addEventListener("input", () => {
        draggingSlider = name;
        div.querySelector(".value").textContent = input.value + " " + s.unit;
      });
      input.addEventListener("change", () => {
        draggingSlider = null;
        send("param", { name: name, value: Number(input.value) });
      });
      box.appendChild(div);
    });
    const base = "/tab/" + w.tab + "/";
    wireDownload($("dl-machine"), base + "machine.npz", "machine.npz");
    wireDownload($("dl-curves"), base + "curves.png", "curves.png");
    wireDownload($("dl-pots"), base + "pots.png", "pots.png");
  }

  function wireDownload(link, url, name) {
    link.href = url;
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      const response = await fetch(url);
      if (!response.ok) {
        let text = response.statusText;
        try { text = (await response.json()).error; } catch (e) { /* not JSON */ }
        status(text, true);
        return;
      }
      const blob = await response.blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = name;
      document.body.appendChild(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    });
  }

  function bindControls() {
    $("task").addEventListener("change", (e) => send("task", { name: e.target.value }));
    $("preset").addEventListener("change", (e) => send("preset", { name: e.target.value }));
    $("rule").addEventListener("change", (e) => send("rule", { name: e.target.value }));
    $("seed").addEventListener("change", (e) => {
      const v = Math.max(0, Math.floor(Number(e.target.value) || 0));
      send("seed", { value: v });
    });
    $("speed").addEventListener("change", (e) => send("speed", { value: e.target.value }));
    $("play").addEventListener("click", () => { M1.view = "trial"; send("play"); });
    $("pause").addEventListener("click", () => send("pause"));
    $("step").addEventListener("click", () => { M1.view = "trial"; send("step"); });
    $("pass").addEventListener("click", () => { M1.view = "trial"; send("pass"); });
    $("reset").addEventListener("click", () => send("reset"));
    $("tool-draw").addEventListener("click", () => setTool("draw"));
    $("tool-erase").addEventListener("click", () => setTool("erase"));
    $("clear").addEventListener("click", () => { drawing.fill(0); sendDrawing(); });
    $("card-prev").addEventListener("click", () => pickCard(-1));
    $("card-next").addEventListener("click", () => pickCard(1));
    $("card-random").addEventListener("click", () => { M1.view = "drawing"; send("card", { index: "random" }); });
    $("teach").addEventListener("click", () => {
      M1.view = "drawing";
      send("teach", { label: Number($("teach-label").value) });
    });
    $("look").addEventListener("click", () => { M1.view = "drawing"; send("look"); });
    $("xor-play").addEventListener("click", () => send("xor", { action: "play" }));
    $("xor-pause").addEventListener("click", () => send("xor", { action: "pause" }));
    $("xor-step").addEventListener("click", () => send("xor", { action: "step" }));
    $("xor-reset").addEventListener("click", () => send("xor", { action: "reset" }));
    document.querySelectorAll("input[name=xaxis]").forEach((r) =>
      r.addEventListener("change", () => drawCurves()));
  }

  function pickCard(delta) {
    const f = M1.frame;
    M1.view = "drawing";
    if (!f) return;
    const n = f.n_train;
    const k = f.card_index === null || f.card_index === undefined ? 0 :
      ((f.card_index + delta) % n + n) % n;
    send("card", { index: k });
  }

  function setTool(name) {
    tool = name;
    $("tool-draw").classList.toggle("on", name === "draw");
    $("tool-erase").classList.toggle("on", name === "erase");
  }

  // ------------------------------------------------------------------ drawing on the retina
  function bindDrawing() {
    const canvas = $("light");
    let painting = false;
    const paint = (event) => {
      const rect = canvas.getBoundingClientRect();
      const x = (event.clientX - rect.left) / rect.width * SIZE;
      const y = (event.clientY - rect.top) / rect.height * SIZE;
      const value = tool === "draw" && !(event.buttons & 2) ? 1 : 0;
      for (let r = Math.floor(y - 1); r <= Math.floor(y + 1); r++) {
        for (let c = Math.floor(x - 1); c <= Math.floor(x + 1); c++) {
          if (r < 0 || c < 0 || r >= SIZE || c >= SIZE) continue;
          const d = Math.hypot(c + 0.5 - x, r + 0.5 - y);
          if (d <= 0.9) drawing[r * SIZE + c] = value;
        }
      }
      M1.view = "drawing";
      drawLight();
    };
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (e) => {
      painting = true;
      canvas.setPointerCapture(e.pointerId);
      paint(e);
    });
    canvas.addEventListener("pointermove", (e) => { if (painting) paint(e); });
    const stop = () => { if (painting) { painting = false; sendDrawing(); } };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
  }

  function sendDrawing() {
    M1.view = "drawing";
    drawLight();
    send("draw", { cells: Array.from(drawing, (v) => Math.round(v * 100) / 100) });
  }

  // ------------------------------------------------------------------ frames
  function onFrame(f) {
    const before = M1.frame;
    M1.frame = f;
    M1.frames++;
    if (!before || f.task !== before.task) updateLabels(f);
    if (f.trial < lastTrial || !f.wired) M1.curve = [];
    if (f.trial > lastTrial && f.playing) M1.view = "trial";
    const tail = M1.curve[M1.curve.length - 1];
    if (f.wired && (f.trial !== lastTrial || !tail || f.tested_at !== tail.tested_at)) {
      M1.curve.push({ trial: f.trial, mistakes: f.mistakes, t: f.machine_time_s,
        acc: f.test_accuracy, tested_at: f.tested_at });
      if (M1.curve.length > 4000) {
        M1.curve = M1.curve.filter((_, i) => i % 2 === 0 || i === M1.curve.length - 1);
      }
    }
    lastTrial = f.trial;
    const ids = f.re || [];
    ids.forEach((id) => {
      const kind = pending[id];
      delete pending[id];
      if (kind === "teach" || kind === "look") explain(kind, f);
      if (kind === "card") {                 // the card picked is now the page's drawing
        const levels = bytes(f.drawing);
        for (let i = 0; i < drawing.length; i++) drawing[i] = levels[i] / 255;
        M1.view = "drawing";
      }
    });
    syncControls(f);
    render();
    showStatus();
  }

  function updateLabels(f) {
    const select = $("teach-label");
    select.innerHTML = "";
    f.classes.forEach((name, k) => option(select, k, name));
    $("task-text").textContent = M1.welcome ? M1.welcome.tasks[f.task] : "";
  }

  function syncControls(f) {
    const s = f.settings;
    if (document.activeElement !== $("task")) $("task").value = f.task;
    if (document.activeElement !== $("preset")) $("preset").value = s.preset;
    if (document.activeElement !== $("rule")) $("rule").value = s.rule;
    if (document.activeElement !== $("seed")) $("seed").value = s.seed;
    if (document.activeElement !== $("speed")) $("speed").value = f.speed;
    $("preset-text").textContent = M1.welcome ? M1.welcome.presets[s.preset] : "";
    Object.entries(s.parameters).forEach(([name, value]) => {
      const input = $("slider-" + name);
      if (!input || draggingSlider === name) return;
      input.value = value;
      const unit = M1.welcome.sliders[name].unit;
      input.parentElement.querySelector(".value").textContent =
        (Math.round(value * 1000) / 1000) + " " + unit;
    });
    $("play").classList.toggle("on", !!f.playing);
  }

  function render() {
    drawLight();
    drawCells();
    drawAUnits();
    drawRUnits();
    drawPots();
    drawCurves();
    const f = M1.frame;
    $("clock-text").textContent = f.wired ?
      f.trial.toLocaleString() + " trials, " + f.mistakes.toLocaleString() +
      " mistakes: the 1960 machine would have needed " + machineTime(f.machine_time_s) :
      "The machine is wired at its first trial.";
  }

  // ------------------------------------------------------------------ retina
  function drawLight() {
    const canvas = $("light");
    const ctx = canvas.getContext("2d");
    const f = M1.frame;
    let values = drawing;
    let name = "(your card)";
    if (f && f.last && M1.view === "trial") {
      const levels = bytes(f.last.light);
      values = Array.from(levels, (v) => v / 255);
      name = f.last.label === null ? "" : "(trial " + f.trial + ": " + f.classes[f.last.label] + ")";
    } else if (f && f.card_index !== null && f.card_index !== undefined) {
      name = "(card " + f.card_index + ")";
    }
    $("card-name").textContent = name;
    const cell = canvas.width / SIZE;
    for (let i = 0; i < SIZE * SIZE; i++) {
      const g = Math.round(20 + 235 * values[i]);
      ctx.fillStyle = "rgb(" + g + "," + g + "," + Math.round(g * 0.92) + ")";
      ctx.fillRect((i % SIZE) * cell, Math.floor(i / SIZE) * cell, cell - 1, cell - 1);
    }
  }

  function drawCells() {
    const canvas = $("cells");
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#15171a";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const f = M1.frame;
    if (!f || !f.last) return;
    const level = bytes(f.last.cells);
    const light = bytes(f.last.light);
    const s = bits(f.last.s, SIZE * SIZE);
    const cell = canvas.width / SIZE;
    for (let i = 0; i < SIZE * SIZE; i++) {
      const x = (i % SIZE) * cell;
      const y = Math.floor(i / SIZE) * cell;
      const v = level[i] / 255;        // log2(conductance / firing level), -4..4
      const g = Math.round(255 * Math.max(0, Math.min(1, v)));
      ctx.fillStyle = "rgb(" + Math.round(g * 0.55) + "," + Math.round(g * 0.5) + "," + Math.round(g * 0.35) + ")";
      ctx.fillRect(x, y, cell - 1, cell - 1);
      const lit = light[i] > 127;
      if (s[i]) {
        ctx.fillStyle = lit ? "#ffd34d" : "#ff7f2a";   // orange: fires in the dark (lag)
        ctx.beginPath();
        ctx.arc(x + cell / 2, y + cell / 2, cell * 0.3, 0, 2 * Math.PI);
        ctx.fill();
      } else if (lit) {                               // lit but not fired (yet)
        ctx.strokeStyle = "#ff7f2a";
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.arc(x + cell / 2, y + cell / 2, cell * 0.28, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
  }

  // ------------------------------------------------------------------ A- and R-units
  function drawAUnits() {
    const canvas = $("a-units");
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#15171a";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const f = M1.frame;
    if (!f || !f.last) { $("a-count").textContent = ""; return; }
    const n = f.last.n_a;
    const a = bits(f.last.a, n);
    const cols = Math.ceil(Math.sqrt(n * canvas.width / canvas.height));
    const rows = Math.ceil(n / cols);
    const w = canvas.width / cols;
    const h = canvas.height / rows;
    const radius = Math.max(1, Math.min(w, h) * 0.36);
    let on = 0;
    for (let k = 0; k < n; k++) {
      on += a[k];
      ctx.fillStyle = a[k] ? "#ffd34d" : "#3b3f44";
      ctx.beginPath();
      ctx.arc((k % cols + 0.5) * w, (Math.floor(k / cols) + 0.5) * h, radius, 0, 2 * Math.PI);
      ctx.fill();
    }
    $("a-count").textContent = on + " of " + n + " lamps lit";
  }

  function drawRUnits() {
    const canvas = $("r-units");
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#15171a";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const f = M1.frame;
    if (!f || !f.last || !f.pots) { $("answer").textContent = ""; return; }
    const t = f.last;
    const trained = new Set(f.pots.trained);
    const n = t.sums_after.length;
    const rowH = canvas.height / n;
    let scale = 1;
    t.sums_after.concat(t.sums_before).forEach((v) => { if (v !== null) scale = Math.max(scale, Math.abs(v)); });
    const x0 = 70, x1 = canvas.width - 14, mid = (x0 + x1) / 2, half = (x1 - x0) / 2;
    ctx.font = "12px sans-serif";
    for (let r = 0; r < n; r++) {
      const y = r * rowH;
      const used = trained.has(r);
      const before = t.sums_before[r] === null ? t.sums_after[r] : t.sums_before[r];
      ctx.fillStyle = used ? "#e8e6e1" : "#5d636a";
      ctx.fillText("R" + r, 6, y + rowH * 0.65);
      ctx.fillStyle = before > 0 ? (used ? "#ffd34d" : "#4a4536") : "#3b3f44";   // the lamp
      ctx.beginPath();
      ctx.arc(42, y + rowH / 2, Math.min(8, rowH * 0.35), 0, 2 * Math.PI);
      ctx.fill();
      ctx.fillStyle = "#202327";
      ctx.fillRect(x0, y + rowH * 0.2, x1 - x0, rowH * 0.6);
      ctx.fillStyle = before > 0 ? "#e0604f" : "#4f8fe0";
      const len = before / scale * half;
      ctx.globalAlpha = used ? 1 : 0.35;
      ctx.fillRect(Math.min(mid, mid + len), y + rowH * 0.28, Math.abs(len), rowH * 0.44);
      ctx.globalAlpha = 1;
      if (t.learned && t.sums_after[r] !== before) {            // where the correction took it
        const xa = mid + t.sums_after[r] / scale * half;
        ctx.strokeStyle = "#ffffff";
        ctx.lineWidth = 2;
        ctx.beginPath(); ctx.moveTo(xa, y + rowH * 0.12); ctx.lineTo(xa, y + rowH * 0.88); ctx.stroke();
      }
      if (t.target && used) {                                    // the right answer's side
        ctx.fillStyle = "#7fd67f";
        const xt = t.target[r] > 0 ? x1 - 4 : x0 + 4;
        ctx.beginPath(); ctx.moveTo(xt, y + rowH * 0.2); ctx.lineTo(xt - 4, y + rowH * 0.05);
        ctx.lineTo(xt + 4, y + rowH * 0.05); ctx.fill();
      }
      ctx.strokeStyle = "#6b7178";
      ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(mid, y + rowH * 0.15); ctx.lineTo(mid, y + rowH * 0.85); ctx.stroke();
    }
    const answer = f.classes[t.answer];
    const el = $("answer");
    if (t.label === null) {
      el.innerHTML = "answer: <b></b>";
      el.querySelector("b").textContent = answer;
    } else {
      el.innerHTML = "card: <b class='card'></b> · answer: <b class='ans'></b>";
      el.querySelector(".card").textContent = f.classes[t.label];
      const ans = el.querySelector(".ans");
      ans.textContent = answer + (t.mistake ? " ✗ corrected" : " ✓");
      ans.className = t.mistake ? "wrong" : "right";
    }
  }

  // ------------------------------------------------------------------ the pot panel
  function potColour(level, zero, span) {
    // level 0..255 over [lo, hi]; zero: the level of weight 0; span: the level distance shown
    // at full colour. Blue below zero, red above.
    const d = level - zero;
    const t = span > 0 ? Math.min(1, Math.abs(d) / span) : 0;
    const base = 30;
    if (d > 0) return [base + 200 * t, base + 60 * t, base + 40 * t];
    return [base + 40 * t, base + 100 * t, base + 210 * t];
  }

  function drawPots() {
    const canvas = $("pots");
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#15171a";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const knobs = $("knobs").getContext("2d");
    knobs.fillStyle = "#15171a";
    knobs.fillRect(0, 0, $("knobs").width, $("knobs").height);
    const f = M1.frame;
    if (!f || !f.pots) { $("pots-text").textContent = "The machine is wired at its first trial."; return; }
    const p = f.pots;
    const [nr, np] = p.shape;
    const values = bytes(p.values);
    const motors = p.motors ? bits(p.motors, nr * np) : null;
    const moved = p.moved ? bits(p.moved, nr * np) : null;
    const zero = Math.round((0 - p.lo) / (p.hi - p.lo) * 255);
    let span = 4;                         // full colour at the largest weight of a trained row
    p.trained.forEach((r) => {
      for (let c = 0; c < np; c++) span = Math.max(span, Math.abs(values[r * np + c] - zero));
    });
    const band = 6;                       // image rows per R-unit: 4 of weight, 1 of motors, 1 gap
    const image = ctx.createImageData(np, nr * band);
    const put = (row, col, rgb) => {
      const o = (row * np + col) * 4;
      image.data[o] = rgb[0]; image.data[o + 1] = rgb[1]; image.data[o + 2] = rgb[2]; image.data[o + 3] = 255;
    };
    for (let r = 0; r < nr; r++) {
      for (let c = 0; c < np; c++) {
        const k = r * np + c;
        const rgb = potColour(values[k], zero, span);
        for (let b = 0; b < band - 2; b++) put(r * band + b, c, rgb);
        const mark = moved && moved[k] ? [255, 225, 77] : motors && motors[k] ? [140, 120, 40] :
          [21, 23, 26];
        put(r * band + band - 2, c, mark);
        put(r * band + band - 1, c, [21, 23, 26]);
      }
    }
    const off = document.createElement("canvas");
    off.width = np; off.height = nr * band;
    off.getContext("2d").putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    const left = 34;
    ctx.drawImage(off, left, 0, canvas.width - left, canvas.height);
    ctx.fillStyle = "#9aa0a6";
    ctx.font = "11px sans-serif";
    const trained = new Set(p.trained);
    for (let r = 0; r < nr; r++) {
      ctx.fillStyle = trained.has(r) ? "#e8e6e1" : "#5d636a";
      ctx.fillText("R" + r, 4, (r + 0.6) * canvas.height / nr);
    }
    // knobs: the pots the last correction turned (or R0's first pots), as dials
    let row = 0, cols = [];
    if (motors) {
      for (let r = 0; r < nr && !cols.length; r++) {
        for (let c = 0; c < np; c++) if (motors[r * np + c]) { row = r; cols.push(c); }
      }
    }
    const count = Math.floor($("knobs").width / 26);
    const turned = cols.length;
    if (!cols.length) for (let c = 0; c < Math.min(count, np); c++) cols.push(c);
    cols = cols.slice(0, count);
    cols.forEach((c, i) => {
      const x = 13 + i * 26, y = 30, rad = 10;
      const v = values[row * np + c] / 255;
      const angle = (-135 + 270 * v) * Math.PI / 180 - Math.PI / 2;
      knobs.fillStyle = moved && moved[row * np + c] ? "#6a5a2a" : "#30353b";
      knobs.beginPath(); knobs.arc(x, y, rad, 0, 2 * Math.PI); knobs.fill();
      knobs.strokeStyle = "#e8e6e1"; knobs.lineWidth = 2;
      knobs.beginPath(); knobs.moveTo(x, y);
      knobs.lineTo(x + rad * Math.cos(angle), y + rad * Math.sin(angle)); knobs.stroke();
      knobs.fillStyle = "#9aa0a6"; knobs.font = "9px sans-serif";
      knobs.fillText(c === np - 1 && np > (f.last ? f.last.n_a : np) ? "b" : String(c), x - 8, y + 24);
    });
    const full = span / 255 * (p.hi - p.lo);
    let text = "Pots between their end stops " + fmt(p.lo) + " and " + fmt(p.hi) +
      "; full colour at ±" + fmt(full, 3) + " (blue below 0, red above). ";
    if (turned) {
      let nm = 0, nv = 0;
      for (let k = 0; k < nr * np; k++) { nm += motors[k]; nv += moved ? moved[k] : 0; }
      text += "Last correction: " + nm + " motors ran, " + nv + " wipers moved. Knobs: R" + row +
        "'s pots it turned" + (turned > count ? " (first " + count + " of " + turned + ")" : "") + ".";
    } else {
      text += "No correction yet. Knobs: R0's first pots.";
    }
    $("pots-text").textContent = text;
  }

  // ------------------------------------------------------------------ curves
  function drawCurves() {
    const canvas = $("curves");
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#15171a";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const f = M1.frame;
    const pts = M1.curve;
    const byTime = document.querySelector("input[name=xaxis]:checked").value === "time";
    const L = 56, R = canvas.width - 50, T = 12, B = canvas.height - 30;
    ctx.strokeStyle = "#50575f"; ctx.lineWidth = 1;
    ctx.strokeRect(L, T, R - L, B - T);
    ctx.font = "11px sans-serif";
    ctx.fillStyle = "#9aa0a6";
    const xs = pts.map((p) => byTime ? p.t / 3600 : p.trial);
    const xmax = Math.max(1e-9, xs.length ? xs[xs.length - 1] : 1);
    const mmax = Math.max(1, pts.length ? pts[pts.length - 1].mistakes : 1);
    ctx.fillText(byTime ? "machine time (hours)" : "trials", (L + R) / 2 - 30, canvas.height - 6);
    for (let i = 0; i <= 4; i++) {
      const x = L + (R - L) * i / 4;
      ctx.fillText(byTime ? (xmax * i / 4).toFixed(2) : Math.round(xmax * i / 4).toString(), x - 10, B + 14);
      const y = B - (B - T) * i / 4;
      ctx.fillStyle = "#e0604f";
      ctx.fillText(Math.round(mmax * i / 4).toString(), 8, y + 4);
      ctx.fillStyle = "#4f8fe0";
      ctx.fillText((i / 4).toFixed(2), R + 6, y + 4);
      ctx.fillStyle = "#9aa0a6";
    }
    if (!pts.length) return;
    ctx.strokeStyle = "#e0604f"; ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach((p, i) => {
      const x = L + (R - L) * xs[i] / xmax;
      const y = B - (B - T) * p.mistakes / mmax;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = "#4f8fe0";
    let shown = -2;
    pts.forEach((p, i) => {
      if (p.acc === null || p.tested_at === shown) return;
      shown = p.tested_at;
      ctx.beginPath();
      ctx.arc(L + (R - L) * xs[i] / xmax, B - (B - T) * p.acc, 3, 0, 2 * Math.PI);
      ctx.fill();
    });
    ctx.fillStyle = "#e0604f"; ctx.fillText("mistakes so far", L + 8, T + 14);
    ctx.fillStyle = "#4f8fe0"; ctx.fillText("test accuracy", L + 8, T + 28);
    if (f) {
      $("curve-text").textContent = "Pass " + (f.pass + 1) + ", card " + f.pass_pos + " of " +
        f.n_train + ". Mistakes per pass: " + (f.pass_mistakes.length ? f.pass_mistakes.join(", ") : "–") +
        ". Test accuracy " + (f.test_accuracy === null ? "–" : (100 * f.test_accuracy).toFixed(1) + " %") +
        ". Machine clock " + machineTime(f.machine_time_s) + ", " + f.motor_steps.toLocaleString() + " motor steps.";
    }
  }

  // ------------------------------------------------------------------ teach it yourself
  function explain(kind, f) {
    const t = f.last;
    const el = $("teach-text");
    if (!t) return;
    const cls = f.classes;
    const list = (xs) => xs.map((v) => v === null ? "–" : fmt(v)).join(", ");
    let text;
    if (kind === "look") {
      text = "It answers " + cls[t.answer] + ". R-unit sums: " + list(t.sums_after) +
        " (lamps on where the sum is above 0). Nothing was learned.";
    } else if (t.mistake || t.motor_steps) {
      const units = t.turned.map((r) => "R" + r);
      text = (t.mistake ? "It answered " + cls[t.answer] + ": wrong. " : "The trainer forced the answer. ") +
        "So the motors turned the pots of the active A-units" + " (and the bias pot) on " +
        (units.length ? units.join(", ") : "the R-units") + " one step toward " + cls[t.label] +
        " (" + t.motor_steps + " motor steps). Sums before: " + list(t.sums_before) +
        "; after: " + list(t.sums_after) + ". Now it answers " + cls[t.answer_after] + ".";
    } else {
      text = "It answered " + cls[t.answer] + ": right. Rosenblatt's rule corrects only " +
        "mistakes, so no pot moved. Sums: " + list(t.sums_after) + ".";
    }
    el.textContent = text;
    M1.explained = { kind: kind, text: text };
  }

  // ------------------------------------------------------------------ XOR
  function onXor(m) {
    M1.xor = m;
    const box = $("xor");
    const names = Object.keys(m.learners);
    if (!names.length) { box.innerHTML = '<p class="note">Press Race: a pass of each learner every moment.</p>'; return; }
    if (box.children.length !== names.length) {
      box.innerHTML = "";
      names.forEach((name) => {
        const div = document.createElement("div");
        div.innerHTML = "<h3></h3><canvas width='176' height='176'></canvas>" +
          "<canvas class='spark' width='220' height='60'></canvas><p class='note'></p>";
        div.querySelector("h3").textContent = name;
        box.appendChild(div);
      });
    }
    names.forEach((name, i) => {
      const L = m.learners[name];
      const div = box.children[i];
      const [map, spark] = div.querySelectorAll("canvas");
      const ctx = map.getContext("2d");
      const n = m.map_size;
      if (L.map) {
        const v = bytes(L.map);
        const cell = map.width / n;
        for (let k = 0; k < n * n; k++) {
          const p = v[k] / 255;
          const rgb = p > 0.5 ? [224, 96 + 60 * (1 - p), 79] : [79, 143, 224];
          const a = Math.abs(p - 0.5) * 2;
          ctx.fillStyle = "rgb(" + Math.round(21 + (rgb[0] - 21) * a) + "," + Math.round(23 + (rgb[1] - 23) * a) + "," + Math.round(26 + (rgb[2] - 26) * a) + ")";
          ctx.fillRect((k % n) * cell, Math.floor(k / n) * cell, cell, cell);
        }
      }
      const s = spark.getContext("2d");
      s.fillStyle = "#15171a"; s.fillRect(0, 0, spark.width, spark.height);
      const ms = L.mistakes;
      const top = Math.max(1, ...ms);
      s.strokeStyle = "#e0604f"; s.lineWidth = 1.5; s.beginPath();
      ms.forEach((v, k) => {
        const x = 4 + (spark.width - 8) * k / Math.max(1, ms.length - 1);
        const y = spark.height - 4 - (spark.height - 8) * v / top;
        if (k === 0) s.moveTo(x, y); else s.lineTo(x, y);
      });
      s.stroke();
      div.querySelector("p").textContent = "mistakes per pass: " + ms.slice(-8).join(", ") +
        " · test accuracy " + (L.accuracy === null ? "–" : (100 * L.accuracy).toFixed(1) + " %");
    });
    if (m.done) status("the XOR race ran its " + m.passes + " passes");
    else showStatus();
  }

  bindControls();
  bindDrawing();
  drawLight();
  connect();
})();
