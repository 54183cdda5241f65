// What the model sees: an answer's `unusual` flag, and the model version's monitor panel
// (GET /models/{name}/monitor: its window, its reference, drift). docs/monitoring.md.

import { el } from "./dom.js";

/** The line under an answer: unusual or typical for the model, with its out-of-distribution score. */
export function renderUnusual(result) {
  if (result.unusual === undefined || result.unusual === null) return null;
  const score = result.ood_score.toFixed(3);
  if (result.unusual) {
    return el(
      "p",
      { class: "unusual", role: "note" },
      `Unusual input for this model (score ${score}): unlike the images it was measured on, so this answer says little.`,
    );
  }
  return el("p", { class: "typical" }, `Typical input for this model (score ${score}).`);
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`;
}

/** The model version's monitor panel, from its report. */
export function renderMonitor(report) {
  const panel = el("details", { class: "monitor" });
  const drift = report.drift;
  const state = !drift.judged
    ? `not judged yet (${report.window.answers} of ${drift.min_answers} answers${report.reference ? "" : ", no reference"})`
    : drift.drifting
      ? "drifting from its reference"
      : "steady";
  panel.append(el("summary", {}, `Monitor of ${report.model} (${report.version}): ${state}`));
  const dl = el("dl");
  const rows = [
    ["answers", String(report.answers)],
    ["unusual", String(report.unusual)],
    ["window", `${report.window.answers} of ${report.window.size}`],
    ["unusual in window", percent(report.window.unusual_share)],
    ["reference", report.reference ? `${report.reference.source}, ${report.reference.samples} images` : "none"],
  ];
  for (const s of drift.statistics) {
    rows.push([s.name, `${s.value.toFixed(3)} (threshold ${s.threshold.toFixed(3)})${s.exceeded ? " exceeded" : ""}`]);
  }
  for (const [k, v] of rows) {
    const pair = el("div");
    pair.append(el("dt", {}, k), el("dd", {}, v));
    dl.append(pair);
  }
  panel.append(dl);
  return panel;
}

/** Fetch and show the monitor panel of `model` in `container` (nothing when it cannot be read). */
export async function showMonitor(container, model) {
  try {
    const response = await fetch(`models/${encodeURIComponent(model)}/monitor`);
    if (!response.ok) return;
    container.append(renderMonitor(await response.json()));
  } catch {
    // the panel is an extra: the answer above stands without it
  }
}
