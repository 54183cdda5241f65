// Compare: the sortable table of models and the accuracy-against-cost scatter plot.

import { canRun } from "./catalog.js";
import { el, svg } from "./dom.js";
import { AXES, formatCount, formatNumber, formatPercent, logDomain, logTicks, paretoFrontier, plotExclusion } from "./frontier.js";

const accuracyText = (m) => (m.weights === "random" ? "none (random)" : m.accuracy_source ?? "none");

export const COLUMNS = [
  { key: "name", label: "Name", text: true },
  { key: "dataset", label: "Dataset", text: true },
  { key: "size_mb", label: "Size (MB)", format: (v) => formatNumber(v) },
  { key: "top1", label: "Top\u20111", format: formatPercent },
  { key: "top5", label: "Top\u20115", format: formatPercent },
  { key: "params", label: "Parameters", format: formatCount },
  { key: "depth", label: "Depth", format: (v) => formatNumber(v) },
  { key: "gflops", label: "GFLOPs", format: (v) => formatNumber(v) },
  { key: "latency_ms", label: "Latency (ms)", format: (v) => formatNumber(v) },
  { key: "throughput_ips", label: "Throughput (img/s)", format: (v) => formatNumber(v) },
  { key: "status", label: "Status", text: true },
  { key: "accuracy_source", label: "Accuracy", text: true, value: accuracyText },
];

const PALETTE = ["#2563eb", "#c2410c", "#15803d", "#7c3aed", "#be123c", "#0e7490"];

const valueOf = (col, m) => (col.value ? col.value(m) : m[col.key]);
const isMissing = (v) => v === null || v === undefined;

/** Rows sorted by one column; missing values always go last. */
export function sortModels(models, key, descending) {
  const col = COLUMNS.find((c) => c.key === key);
  const sign = descending ? -1 : 1;
  return models.slice().sort((a, b) => {
    const va = valueOf(col, a);
    const vb = valueOf(col, b);
    if (isMissing(va) || isMissing(vb)) return isMissing(va) - isMissing(vb);
    const order = col.text ? String(va).localeCompare(String(vb)) : va - vb;
    return sign * order || a.name.localeCompare(b.name);
  });
}

/** Build the header once; `onSort(key)` is called when a heading is activated. */
export function renderTableHead(table, onSort) {
  const tr = table.querySelector("thead tr");
  tr.replaceChildren();
  for (const col of COLUMNS) {
    const th = el("th", { scope: "col", "data-key": col.key, "aria-sort": "none" });
    if (!col.text) th.classList.add("num");
    const button = el("button", { type: "button", class: "sort" });
    button.append(col.label, el("span", { class: "arrow", "aria-hidden": "true" }));
    button.addEventListener("click", () => onSort(col.key));
    th.append(button);
    tr.append(th);
  }
}

// Until this host has measured a model, its latency is the registry's, shown marked and naming its host.
const otherHost = (m) => `p50 from the registry, measured on ${m.registry_latency_host}; not yet measured on this host`;

function latencyCell(m) {
  const td = el("td", { class: "num other-host", title: otherHost(m) }, formatNumber(m.registry_latency_ms));
  td.append(el("sup", { "aria-hidden": "true" }, "\u2020"), el("span", { class: "visually-hidden" }, ` (${otherHost(m)})`));
  return td;
}

function cell(col, m, noteIds) {
  const v = valueOf(col, m);
  if (col.key === "name") return el("th", { scope: "row" }, v);
  if (col.key === "latency_ms" && isMissing(v) && !isMissing(m.registry_latency_ms)) return latencyCell(m);
  const td = el("td", col.text ? {} : { class: "num" }, col.format ? col.format(v) : v ?? "—");
  if (col.key === "status") {
    td.classList.add(`status-${m.status}`);
    if (m.status_reason) {
      // The reason is a note under the table, so that long reasons do not widen the column.
      td.setAttribute("aria-describedby", noteIds.get(m.name));
      td.append(el("sup", { "aria-hidden": "true" }, "*"));
    }
  }
  return td;
}

function renderNotes(box, rows) {
  // One note per distinct reason, naming its models: many unbuilt artifacts make one line, not many.
  const byReason = new Map();
  for (const m of rows.filter((r) => r.status_reason)) {
    const key = `${m.status}: ${m.status_reason}`;
    if (!byReason.has(key)) byReason.set(key, []);
    byReason.get(key).push(m);
  }
  const noteIds = new Map();
  box.replaceChildren();
  box.hidden = byReason.size === 0;
  let i = 0;
  for (const [reason, models] of byReason) {
    const li = el("li", { id: `note-${i++}` });
    li.append(el("strong", {}, models.map((m) => m.name).join(", ")), ` ${reason}`);
    for (const m of models) noteIds.set(m.name, li.id);
    box.append(li);
  }
  return noteIds;
}

export function renderTableBody(table, notes, rows, sortKey, descending) {
  const noteIds = renderNotes(notes, rows);
  for (const th of table.querySelectorAll("thead th")) {
    const active = th.dataset.key === sortKey;
    th.setAttribute("aria-sort", active ? (descending ? "descending" : "ascending") : "none");
    th.querySelector(".arrow").textContent = active ? (descending ? "\u00a0▼" : "\u00a0▲") : "";
  }
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const m of rows) {
    const tr = el("tr", { "data-model": m.name });
    for (const col of COLUMNS) tr.append(cell(col, m, noteIds));
    body.append(tr);
  }
}

function latencyText(m, key) {
  if (key !== "latency_ms" || !isMissing(m.latency_ms) || isMissing(m.registry_latency_ms)) return formatNumber(m[key]);
  return `${formatNumber(m.registry_latency_ms)} (registry, ${m.registry_latency_host})`;
}

function describe(m, x) {
  return [
    ["Dataset", m.dataset],
    ["Top-1", formatPercent(m.top1)],
    ["Top-5", formatPercent(m.top5)],
    [AXES[x].label, latencyText(m, x)],
    ["Parameters", formatCount(m.params)],
    ["Depth", formatNumber(m.depth)],
    ...Object.keys(AXES)
      .filter((k) => k !== x)
      .map((k) => [AXES[k].label, latencyText(m, k)]),
    ["Throughput (img/s)", formatNumber(m.throughput_ips)],
    ["Status", m.status],
    ["Accuracy", accuracyText(m)],
  ];
}

function showTip(tip, m, x, px, py, onFrontier) {
  const dl = el("dl");
  for (const [k, v] of describe(m, x)) dl.append(el("dt", {}, k), el("dd", {}, v));
  tip.replaceChildren(el("strong", {}, m.name + (onFrontier ? " (on the frontier)" : "")), dl);
  tip.hidden = false;
  const box = tip.parentElement.getBoundingClientRect();
  const w = tip.offsetWidth;
  const h = tip.offsetHeight;
  const plotHeight = tip.parentElement.querySelector("svg")?.getBoundingClientRect().height ?? 0;
  let left;
  let top;
  if (box.width < 520) {
    // Narrow screens: below the plot, where it hides none of the markers.
    left = 0;
    top = plotHeight + 4;
  } else {
    // Open on the side with more room, so the tip covers as little of the plot as it can.
    left = px > box.width / 2 ? Math.max(0, px - 14 - w) : Math.min(px + 14, Math.max(0, box.width - w));
    top = Math.max(0, Math.min(py - h / 2, box.height - h));
  }
  tip.style.left = `${left}px`;
  tip.style.top = `${top}px`;
}

function yTicks(lo, hi) {
  const span = hi - lo;
  const step = [0.01, 0.02, 0.05, 0.1, 0.2].find((s) => span / s <= 6) ?? 0.25;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(Number(v.toFixed(4)));
  return ticks;
}

// Frontier labels: try places around the marker, keep the first that overlaps no earlier label and
// stays inside the plot. Text width is estimated; 12 px bold runs about 7 px a character.
function placeLabels(items, width, height) {
  const placed = [];
  const nodes = [];
  for (const { text, cx, cy, r } of items) {
    const w = text.length * 7;
    const h = 13;
    // Beside the marker first, then further up or down, right before left.
    const spots = [];
    for (const dy of [0, 1, -1, 2, -2, 3, -3]) {
      spots.push([cx + r + 3, cy - r - 2 + dy * (h + 2), "start"], [cx + r + 3, cy + r + h + dy * (h + 2), "start"]);
    }
    for (const dy of [0, 1, -1, 2, -2]) {
      spots.push([cx - r - 3, cy - r - 2 + dy * (h + 2), "end"], [cx - r - 3, cy + r + h + dy * (h + 2), "end"]);
    }
    const box = ([x, y, anchor]) => ({ x0: anchor === "end" ? x - w : x, x1: anchor === "end" ? x : x + w, y0: y - h, y1: y });
    const fits = (b) => b.x0 >= 0 && b.x1 <= width && b.y0 >= 0 && b.y1 <= height;
    const clear = (b) => placed.every((p) => b.x1 < p.x0 || b.x0 > p.x1 || b.y1 < p.y0 || b.y0 > p.y1);
    const spot = spots.find((sp) => fits(box(sp)) && clear(box(sp))) ?? spots.find((sp) => fits(box(sp))) ?? spots[0];
    placed.push(box(spot));
    if (spots.indexOf(spot) >= 2) {
      // Moved away from its marker: a leader line says whose label it is.
      nodes.push(svg("line", { x1: cx, y1: cy, x2: spot[0], y2: spot[1] - h / 2, class: "leader" }));
    }
    nodes.push(svg("text", { x: spot[0], y: spot[1], "text-anchor": spot[2], class: "frontier-label" }, text));
  }
  return nodes;
}

/**
 * Draw the scatter plot of the plottable models into `container` and list the others in `apartBox`.
 * `onHover(name | null)` links the plot to the table.
 */
export function renderPlot({ container, tip, apartBox, models, x, onHover }) {
  tip.hidden = true;
  const plotted = models.filter((m) => plotExclusion(m, x) === null);
  renderApart(apartBox, models, x);
  container.replaceChildren();
  if (plotted.length === 0) {
    container.append(el("p", { class: "empty" }, "No model with accuracy has this measure yet."));
    return;
  }
  const width = Math.max(280, container.clientWidth);
  const height = Math.round(Math.min(440, Math.max(260, width * 0.55)));
  const m = { left: 50, right: 14, top: 14, bottom: 44 };
  const [x0, x1] = logDomain(plotted.map((d) => d[x]));
  const ys = plotted.map((d) => d.top1);
  const ypad = Math.max(0.01, (Math.max(...ys) - Math.min(...ys)) * 0.12);
  const y0 = Math.max(0, Math.min(...ys) - ypad);
  const y1 = Math.min(1, Math.max(...ys) + ypad);
  const sx = (v) => m.left + ((Math.log10(v) - Math.log10(x0)) / (Math.log10(x1) - Math.log10(x0))) * (width - m.left - m.right);
  const sy = (v) => height - m.bottom - ((v - y0) / (y1 - y0 || 1)) * (height - m.top - m.bottom);
  const root = svg("svg", {
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "group",
    "aria-labelledby": "plot-caption",
  });

  drawAxes(root, { x, x0, x1, y0, y1, sx, sy, width, height, m });

  const datasets = [...new Set(plotted.map((d) => d.dataset))];
  const color = (d) => PALETTE[datasets.indexOf(d.dataset) % PALETTE.length];
  const frontierNames = new Set();
  for (const ds of datasets) {
    // Only models that run here make the frontier, as in GET /models/pareto and model=auto.
    const frontier = paretoFrontier(plotted.filter((d) => d.dataset === ds && canRun(d)), x);
    if (frontier.length === 0) continue;
    frontier.forEach((d) => frontierNames.add(d.name));
    const points = frontier.map((d) => `${sx(d[x]).toFixed(1)},${sy(d.top1).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { class: "frontier", points, stroke: PALETTE[datasets.indexOf(ds) % PALETTE.length] }));
  }

  const maxParams = Math.max(...plotted.map((d) => d.params || 0), 1);
  const radius = (d) => Math.max(3.5, Math.sqrt((d.params || 0) / maxParams) * 18);
  const marks = svg("g", { class: "marks" });
  const placed = [];
  for (const d of plotted.slice().sort((a, b) => radius(b) - radius(a))) {
    const on = frontierNames.has(d.name);
    const cx = dodge(placed, sx(d[x]), sy(d.top1), radius(d));
    const cy = sy(d.top1);
    placed.push({ cx, cy });
    const c = svg("circle", {
      cx: cx.toFixed(1),
      cy: cy.toFixed(1),
      r: radius(d).toFixed(1),
      class: ["point", on && "on-frontier", !canRun(d) && "cannot-run"].filter(Boolean).join(" "),
      fill: color(d),
      tabindex: 0,
      role: "img",
      "data-model": d.name,
      "aria-label": `${d.name}: top-1 ${formatPercent(d.top1)}, ${AXES[x].short} ${formatNumber(d[x])}, ${formatCount(d.params)} parameters${on ? ", on the Pareto frontier" : ""}${canRun(d) ? "" : ", cannot run here"}`,
    });
    const enter = () => {
      showTip(tip, d, x, cx, cy, on);
      onHover(d.name);
    };
    const leave = () => {
      tip.hidden = true;
      onHover(null);
    };
    c.addEventListener("mouseenter", enter);
    c.addEventListener("focus", enter);
    c.addEventListener("mouseleave", leave);
    c.addEventListener("blur", leave);
    marks.append(c);
  }
  root.append(marks);

  const labels = svg("g", { class: "frontier-labels", "aria-hidden": "true" });
  const items = plotted
    .filter((p) => frontierNames.has(p.name))
    .sort((a, b) => b.top1 - a.top1) // the best models choose their place first
    .map((d) => ({ text: d.name, cx: sx(d[x]), cy: sy(d.top1), r: radius(d) * 0.7 }));
  labels.append(...placeLabels(items, width, height));
  root.append(labels);
  container.append(root);
  if (datasets.length > 1) container.append(legend(datasets));
}

/**
 * A marker drawn over an earlier one's centre would hide it from the pointer (a quantized variant has its
 * model's GFLOPs and nearly its accuracy): move it right, just clear of every such centre.
 */
function dodge(placed, cx, cy, r) {
  let x = cx;
  for (let moved = true, tries = 0; moved && tries < 20; tries++) {
    moved = false;
    for (const p of placed) {
      if (Math.hypot(x - p.cx, cy - p.cy) <= r) {
        x = p.cx + r + 1;
        moved = true;
      }
    }
  }
  return x;
}

function drawAxes(root, { x, x0, x1, y0, y1, sx, sy, width, height, m }) {
  const axes = svg("g", { class: "axes" });
  for (const t of logTicks(x0, x1, width < 480 ? 4 : 7)) {
    const px = sx(t);
    axes.append(svg("line", { x1: px, x2: px, y1: m.top, y2: height - m.bottom, class: "grid" }));
    axes.append(svg("text", { x: px, y: height - m.bottom + 16, "text-anchor": "middle" }, formatNumber(t)));
  }
  for (const t of yTicks(y0, y1)) {
    const py = sy(t);
    axes.append(svg("line", { x1: m.left, x2: width - m.right, y1: py, y2: py, class: "grid" }));
    axes.append(svg("text", { x: m.left - 6, y: py + 4, "text-anchor": "end" }, `${Math.round(t * 100)}%`));
  }
  axes.append(svg("line", { x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom, class: "axis" }));
  axes.append(svg("line", { x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom, class: "axis" }));
  axes.append(svg("text", { x: (m.left + width - m.right) / 2, y: height - 8, "text-anchor": "middle", class: "axis-title" }, `${AXES[x].label}, log scale`));
  axes.append(
    svg("text", { x: 12, y: (m.top + height - m.bottom) / 2, "text-anchor": "middle", class: "axis-title", transform: `rotate(-90 12 ${(m.top + height - m.bottom) / 2})` }, "Top-1 accuracy"),
  );
  root.append(axes);
}

function legend(datasets) {
  const list = el("ul", { class: "legend", "aria-label": "Marker colour: dataset" });
  datasets.forEach((ds, i) => {
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = PALETTE[i % PALETTE.length];
    const item = el("li");
    item.append(swatch, ds);
    list.append(item);
  });
  return list;
}

function renderApart(box, models, x) {
  const apart = models.map((d) => [d, plotExclusion(d, x)]).filter(([, why]) => why !== null);
  box.replaceChildren();
  box.hidden = apart.length === 0;
  if (apart.length === 0) return;
  box.append(el("h3", {}, `Not on the plot (${apart.length})`));
  const ul = el("ul");
  for (const [d, why] of apart) {
    const li = el("li", { "data-model": d.name });
    li.append(el("strong", {}, d.name), ` ${why}${canRun(d) ? "" : ", cannot run here"}`);
    ul.append(li);
  }
  box.append(ul);
}
