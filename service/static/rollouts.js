// Rollouts: for each model with several versions, which version serves in which role, how many requests
// each answered, and how the shadow's answers compare with the primary's (GET /models/{name}/rollout).

import { el } from "./dom.js";

const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
const ms = (x) => (x === null || x === undefined ? "–" : `${x.toFixed(2)} ms`);

function versionRows(report) {
  const table = el("table", { class: "rollout" });
  const head = el("tr");
  for (const h of ["version", "role", "status", "requests", "note"]) head.append(el("th", { scope: "col" }, h));
  table.append(el("thead"), el("tbody"));
  table.tHead.append(head);
  for (const v of report.versions) {
    const row = el("tr");
    row.append(
      el("td", {}, v.version),
      el("td", {}, v.role ?? "pinned only"),
      el("td", {}, v.status),
      el("td", {}, String((report.served[v.version] ?? 0) + (report.pinned[v.version] ?? 0))),
      el("td", {}, v.error ? `failed to roll out: ${v.error}` : (v.reason ?? "")),
    );
    table.tBodies[0].append(row);
  }
  return table;
}

function shadowLines(report) {
  return report.shadow.map((s) => {
    const [low, high] = s.agreement_interval;
    return el(
      "p",
      { class: "shadow" },
      `Shadow ${s.shadow} against ${s.primary}: top-1 agreement ${pct(s.agreement)} (95% interval ${pct(low)}–${pct(high)}) ` +
        `over ${s.images} images; p50/p99 ${ms(s.primary_latency_ms.p50)}/${ms(s.primary_latency_ms.p99)} against ` +
        `${ms(s.shadow_latency_ms.p50)}/${ms(s.shadow_latency_ms.p99)}.`,
    );
  });
}

/** Fill `container` with the rollout of every model of `models` that has several versions; hide it if none. */
export async function renderRollouts(container, models) {
  const versioned = models.filter((m) => m.rollout);
  container.hidden = versioned.length === 0;
  const list = container.querySelector(".rollouts");
  list.replaceChildren();
  for (const m of versioned) {
    const response = await fetch(`models/${encodeURIComponent(m.name)}/rollout`, { headers: { Accept: "application/json" } });
    if (!response.ok) continue;
    const report = await response.json();
    const section = el("article", { class: "rollout-model" });
    section.append(el("h3", {}, m.name), versionRows(report), ...shadowLines(report));
    list.append(section);
  }
}
