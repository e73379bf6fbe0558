// The dashboard: ONE EventSource on GET /samples?topic=..., four line charts drawn in
// SVG and a feed of the events of the topics it watches.
//
// On that one stream every event's type names its topic: `metrics:sample` for the
// samples, `news` for an event published on `news` without a type, `news:reset` when
// the server could not replay what the page missed on `news` (`news:<type>` for other
// types, which this page does not show). A browser allows 6 connections per server
// over HTTP/1.1: one stream per topic would stall at the seventh.
//
// Each sample carries one JSON object of numbers (see server.py). The page keeps the
// last minute of samples, by the server's clock, and redraws every chart on each
// sample. After a reconnect the browser resumes with Last-Event-ID (one id for every
// topic of the stream), so the server replays what was missed; a longer outage shows
// as a gap.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  // The topics to watch: ?topic=NAME, repeated; `news` if the page was given none
  // (?topic= with no name watches none). The samples' own topic is always streamed.
  const METRICS = "metrics";
  const MAX_WATCHED = 31;
  const WATCHED = params.has("topic")
    ? [...new Set(params.getAll("topic").filter((t) => t && t !== METRICS))].slice(0, MAX_WATCHED)
    : ["news"];
  const STREAM_URL = WATCHED.length
    ? `/samples?${WATCHED.map((t) => `topic=${encodeURIComponent(t)}`).join("&")}`
    : "/samples";
  const MAX_FEED = 50; // events kept in the feed, newest first
  // Seconds shown: one minute, or ?window=SECONDS (10 minutes at most: the server
  // replays one minute to a new page, the rest fills in as the page stays open).
  const WINDOW_S = (() => {
    const asked = Number(params.get("window"));
    return asked > 0 ? Math.min(asked, 600) : 60;
  })();
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MAX_BACKOFF_MS = 30000;
  const MIB = 1024 * 1024;

  const CHARTS = [
    {
      id: "cpu",
      format: (v) => `${v.toFixed(1)} %`,
      minTop: 10,
      series: [
        { key: "process_cpu", label: "this process", color: "#2f6fde" },
        { key: "system_cpu", label: "whole system", color: "#e07b24" },
      ],
    },
    {
      id: "memory",
      format: (v) => `${v.toFixed(1)} MiB`,
      minTop: 10,
      series: [{ key: "process_rss", label: "process RSS", color: "#7a4fd6", scale: 1 / MIB }],
      note: (s) => {
        const used = s.system_memory_used / s.system_memory_total;
        const gib = (bytes) => (bytes / 1024 / MIB).toFixed(1);
        return `system ${gib(s.system_memory_used)} of ${gib(s.system_memory_total)} GiB (${(used * 100).toFixed(0)} %)`;
      },
    },
    {
      id: "connections",
      format: (v) => v.toFixed(0),
      minTop: 4,
      integer: true,
      series: [{ key: "connections", label: "subscribers", color: "#1f8a4c" }],
    },
    {
      id: "events",
      format: (v) => `${v.toFixed(1)} /s`,
      minTop: 5,
      series: [
        { key: "published_per_second", label: "published", color: "#c23b3b" },
        { key: "delivered_per_second", label: "delivered", color: "#2a9bb5" },
      ],
    },
  ];
  const FIELDS = [
    "time", "process_cpu", "system_cpu", "process_rss", "system_memory_used",
    "system_memory_total", "connections", "published_per_second", "delivered_per_second",
  ];

  const statusEl = document.getElementById("status");
  const statusText = document.getElementById("status-text");
  const updatedEl = document.getElementById("updated");
  const feedList = document.getElementById("feed-list");
  const feedEmpty = document.getElementById("feed-empty");
  let samples = [];
  let interval = 1; // seconds between samples, learned from the stream
  const steps = []; // the last seconds between two samples, for that estimate
  let source = null;
  let hasBeenOpen = false;
  let backoff = 1000;
  let lastEventId = "";

  function setState(state) {
    statusEl.dataset.state = state;
    statusText.textContent = state;
  }

  function el(name, attributes = {}, parent = null) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  // A round step for about four grid lines up to `value`: 1, 2 or 5 times a power of ten.
  function niceStep(value, minStep) {
    const rough = Math.max(value / 4, minStep);
    const power = 10 ** Math.floor(Math.log10(rough));
    for (const step of [1, 2, 5, 10]) if (step * power >= rough) return step * power;
    return 10 * power;
  }

  function setUpLegends() {
    for (const chart of CHARTS) {
      const legend = document.querySelector(`#${chart.id} .legend`);
      for (const series of chart.series) {
        const item = document.createElement("li");
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = series.color;
        const label = document.createElement("span");
        label.textContent = series.label;
        const value = document.createElement("strong");
        value.className = "value";
        value.dataset.key = series.key;
        value.textContent = "–";
        item.append(swatch, label, value);
        legend.appendChild(item);
      }
    }
  }

  function draw(chart) {
    const card = document.getElementById(chart.id);
    const svg = card.querySelector("svg");
    const width = svg.clientWidth || 400;
    const height = svg.clientHeight || 160;
    const pad = { left: 44, right: 8, top: 8, bottom: 20 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();

    const latest = samples.length ? samples[samples.length - 1].time : 0;
    const start = latest - WINDOW_S;
    const valueOf = (sample, series) => sample[series.key] * (series.scale ?? 1);
    let top = chart.minTop;
    for (const sample of samples) {
      for (const series of chart.series) top = Math.max(top, valueOf(sample, series));
    }
    const step = niceStep(top, chart.integer ? 1 : 0);
    const lines = Math.max(1, Math.ceil(top / step - 1e-9));
    top = step * lines;
    const x = (t) => pad.left + ((t - start) / WINDOW_S) * plotW;
    const y = (v) => pad.top + plotH - (v / top) * plotH;

    for (let i = 0; i <= lines; i++) {
      const value = step * i;
      const gy = y(value);
      el("line", { x1: pad.left, x2: width - pad.right, y1: gy, y2: gy, class: "gridline" }, svg);
      const label = el("text", { x: pad.left - 6, y: gy + 4, class: "axis", "text-anchor": "end" }, svg);
      label.textContent = String(+value.toFixed(2));
    }
    for (const [seconds, anchor] of [[WINDOW_S, "start"], [WINDOW_S / 2, "middle"], [0, "end"]]) {
      const label = el("text", { x: x(latest - seconds), y: height - 4, class: "axis", "text-anchor": anchor }, svg);
      label.textContent = seconds === 0 ? "now" : `-${seconds}s`;
    }

    for (const series of chart.series) {
      // A gap of more than a few intervals (an outage) breaks the line.
      let d = "";
      let previous = null;
      for (const sample of samples) {
        const command = previous === null || sample.time - previous > interval * 3.5 ? "M" : "L";
        d += `${command}${x(sample.time).toFixed(1)},${y(valueOf(sample, series)).toFixed(1)}`;
        previous = sample.time;
      }
      el("path", { d, class: "line", stroke: series.color, "data-key": series.key }, svg);
    }
    // For tests and curious readers: how many samples, over how many seconds.
    svg.dataset.points = String(samples.length);
    svg.dataset.span = samples.length ? String(latest - samples[0].time) : "0";
    svg.dataset.latest = String(latest);

    const last = samples[samples.length - 1];
    if (last) {
      for (const series of chart.series) {
        card.querySelector(`.value[data-key="${series.key}"]`).textContent = chart.format(valueOf(last, series));
      }
      if (chart.note) card.querySelector(".card-head .note").textContent = chart.note(last);
    }
  }

  function drawAll() {
    for (const chart of CHARTS) draw(chart);
  }

  function isSample(value) {
    return value !== null && typeof value === "object" &&
      FIELDS.every((key) => typeof value[key] === "number" && Number.isFinite(value[key]));
  }

  function add(sample) {
    const last = samples[samples.length - 1];
    if (last && sample.time <= last.time) return; // a replayed sample we already have
    if (last && sample.time - last.time < 10) {
      // The median of the last steps: one sample taken late, then one on time (a
      // busy server) makes a short step, which alone would break every line.
      steps.push(sample.time - last.time);
      if (steps.length > 15) steps.shift();
      const sorted = [...steps].sort((a, b) => a - b);
      interval = sorted[Math.floor(sorted.length / 2)] || interval;
    }
    samples.push(sample);
    const start = sample.time - WINDOW_S;
    while (samples.length && samples[0].time < start) samples.shift();
    updatedEl.textContent = `last sample ${new Date(sample.time * 1000).toLocaleTimeString()}`;
    drawAll();
  }

  // Another person's data: shown as text (textContent), never as markup.
  function feed(topic, text, kind = "") {
    const item = document.createElement("li");
    const time = document.createElement("time");
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString();
    const name = document.createElement("span");
    name.className = "topic";
    name.textContent = topic;
    const data = document.createElement("span");
    data.className = `data ${kind}`;
    data.textContent = text.length > 500 ? `${text.slice(0, 500)}…` : text;
    item.append(time, name, data);
    feedList.prepend(item);
    while (feedList.children.length > MAX_FEED) feedList.lastElementChild.remove();
    feedEmpty.hidden = true;
  }

  function onSample(event) {
    if (event.lastEventId) lastEventId = event.lastEventId;
    let value = null;
    try {
      value = JSON.parse(event.data);
    } catch {}
    if (isSample(value)) add(value);
  }

  function connect() {
    setState(hasBeenOpen ? "reconnecting" : "connecting");
    const url = lastEventId
      ? `${STREAM_URL}${STREAM_URL.includes("?") ? "&" : "?"}lastEventId=${encodeURIComponent(lastEventId)}`
      : STREAM_URL;
    source = new EventSource(url);
    source.onopen = () => {
      backoff = 1000;
      hasBeenOpen = true;
      setState("open");
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        setState("reconnecting");
        source.close();
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      } else {
        setState(hasBeenOpen ? "reconnecting" : "connecting");
      }
    };
    // `sample` on a stream of the samples only, `metrics:sample` on one of several topics.
    source.addEventListener("sample", onSample);
    source.addEventListener(`${METRICS}:sample`, onSample);
    source.addEventListener(`${METRICS}:reset`, (event) => {
      if (event.lastEventId) lastEventId = event.lastEventId;
    });
    for (const topic of WATCHED) {
      source.addEventListener(topic, (event) => {
        if (event.lastEventId) lastEventId = event.lastEventId;
        feed(topic, event.data);
      });
      source.addEventListener(`${topic}:reset`, (event) => {
        if (event.lastEventId) lastEventId = event.lastEventId;
        feed(topic, "Some events were missed while disconnected.", "warn");
      });
    }
  }

  if (WINDOW_S !== 60) document.getElementById("window").textContent = `the last ${WINDOW_S} s`;
  document.getElementById("watched").textContent = WATCHED.length
    ? `watching ${WATCHED.join(", ")} (change with ?topic=NAME)`
    : "watching no topic (add ?topic=NAME)";
  setUpLegends();
  drawAll();
  window.addEventListener("resize", drawAll);
  connect();
})();
