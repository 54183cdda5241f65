// model=auto: the constraints of the classify form as query parameters, and how the service chose.

import { el } from "./dom.js";
import { formatNumber, formatPercent } from "./frontier.js";

/**
 * The query of POST /classify?model=auto from the constraint fields; an empty field sets no limit.
 * Top-1 is typed in percent and sent as a fraction, as GET /models gives it.
 */
export function autoParams({ dataset, maxLatencyMs, minTop1Percent, maxSizeMb }) {
  const params = { model: "auto", dataset };
  const given = (v) => String(v ?? "").trim() !== "";
  if (given(maxLatencyMs)) params.max_latency_ms = String(maxLatencyMs);
  if (given(minTop1Percent)) params.min_top1 = String(Number(minTop1Percent) / 100);
  if (given(maxSizeMb)) params.max_size_mb = String(maxSizeMb);
  return params;
}

function verdict(c) {
  if (c.fits) {
    const latency = c.latency_ms === null ? "latency not measured here" : `${formatNumber(c.latency_ms)} ms (${c.latency_source})`;
    return `fits: top-1 ${formatPercent(c.top1)}, ${latency}, ${formatNumber(c.size_mb)} MB`;
  }
  return c.failed.map((f) => f.detail).join("; ");
}

/** The answer's `selection`: the chosen model, the reason, and every model considered with its verdict. */
export function renderSelection(selection, version) {
  const box = el("div", { class: "selection result-head" });
  const head = el("p", { class: "chosen" });
  head.append("auto chose ", el("strong", { id: "chosen-model" }, selection.chosen), ` (version ${version}) from ${selection.dataset}: ${selection.reason}.`);
  const details = el("details");
  details.append(el("summary", {}, `Every ${selection.dataset} model considered (${selection.considered.length})`));
  const list = el("ol", { class: "considered" });
  for (const c of selection.considered) {
    const item = el("li", { class: c.fits ? "fits" : "fails", "data-model": c.name });
    item.append(el("strong", {}, c.name), " ", verdict(c));
    list.append(item);
  }
  details.append(list);
  box.append(head, details);
  return box;
}
