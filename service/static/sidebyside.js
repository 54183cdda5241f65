// Side by side: one image through several models with POST /compare, each model's top-k in its own column.

import { postImages, renderPredictions, thumbnail } from "./classify.js";
import { el } from "./dom.js";
import { formatNumber, formatPercent } from "./frontier.js";

/**
 * The models checked when a dataset is chosen: its most accurate and its smallest, so the first
 * comparison shows what the smaller model gives up (or not). One model when the dataset has one.
 */
export function defaultPair(runnable) {
  const ranked = runnable.filter((m) => m.top1 !== null && m.weights !== "random");
  const pool = ranked.length >= 2 ? ranked : runnable;
  if (pool.length <= 1) return pool.map((m) => m.name);
  const best = pool.reduce((a, b) => ((b.top1 ?? 0) > (a.top1 ?? 0) ? b : a));
  const rest = pool.filter((m) => m !== best);
  const smallest = rest.reduce((a, b) => ((b.size_mb ?? Infinity) < (a.size_mb ?? Infinity) ? b : a));
  return [best.name, smallest.name];
}

/** One checkbox per model that runs here, the `checked` names ticked. */
export function renderModelChoice(container, runnable, checked) {
  container.replaceChildren();
  for (const m of runnable) {
    const id = `sbs-${m.name}`;
    const box = el("input", { type: "checkbox", id, name: "sbs-model", value: m.name });
    box.checked = checked.includes(m.name);
    const label = el("label", { for: id, class: "check" });
    label.append(box, ` ${m.name} `, el("span", { class: "muted" }, m.top1 === null ? "" : formatPercent(m.top1)));
    container.append(label);
  }
}

export function checkedModels(container) {
  return [...container.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value);
}

/** POST /compare with one image; resolves like postImages. */
export function compareImage(file, models, topK) {
  return postImages("compare", [file], { models: models.join(","), top_k: String(topK) });
}

function agreementText(agreement, labelSets) {
  if (labelSets) {
    const groups = labelSets.map((g) => g.join(", ")).join(" / ");
    return `These models classify into different label sets (${groups}): their answers cannot agree or disagree.`;
  }
  const { answered, top1, share_top1: share, unanimous } = agreement;
  if (answered === 0 || !top1) return "No model answered.";
  if (answered === 1) return `One model answered: “${top1.label}”.`;
  if (unanimous) return `${answered === 2 ? "Both" : `All ${answered}`} models say “${top1.label}”.`;
  return `${share} of ${answered} models say “${top1.label}” (${top1.models.join(", ")}); ${agreement.distinct_top1} different answers in all.`;
}

function column(entry, agreed) {
  const col = el("article", { class: "column", "data-model": entry.model });
  col.append(el("h3", { class: "column-model" }, entry.model));
  if (entry.error) {
    col.classList.add("failed");
    const box = el("p", { class: "error" });
    box.append(el("strong", {}, `${entry.error.title} (HTTP ${entry.error.status}).`), " ", el("span", { class: "detail" }, entry.error.detail));
    col.append(box);
    return col;
  }
  const top = entry.predictions[0];
  if (top && agreed && top.index === agreed.index) col.classList.add("agrees");
  col.append(
    el("p", { class: "muted column-meta" }, `top-1 on its test set: ${formatPercent(entry.top1)}`),
    el("p", { class: "top-label" }, top ? top.label : "no prediction"),
    renderPredictions(entry.predictions),
  );
  const t = entry.timing_ms;
  const load = t.load >= 0.5 ? `, load ${formatNumber(t.load)}` : ""; // a lazy load in this request
  col.append(el("p", { class: "muted column-timing" }, `${formatNumber(t.total)} ms (inference ${formatNumber(t.inference)}${load})`));
  return col;
}

/** The image, the agreement, and one column per model in the order asked. */
export function renderColumns(container, file, body) {
  const head = el("div", { class: "sbs-head" });
  const figure = el("figure", { class: "thumb-figure" });
  figure.append(
    thumbnail(file, `Uploaded image ${body.image.filename || ""}`.trim()),
    el("figcaption", {}, `${body.image.filename || "image"}, ${body.image.width}×${body.image.height}`),
  );
  head.append(figure, el("p", { class: "agreement" }, agreementText(body.agreement, body.label_sets_differ)));
  const columns = el("div", { class: "columns" });
  for (const entry of body.models) columns.append(column(entry, body.agreement.top1));
  container.replaceChildren(head, columns);
}
