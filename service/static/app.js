// The page: loads GET /models once, then wires the classify form and the comparison together.

import { describeError, postClassify, renderResults, showError } from "./classify.js";
import { renderPlot, renderTableBody, renderTableHead, sortModels } from "./compare.js";

const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  defaultModel: null,
  sortKey: "top1",
  descending: true,
  lastFiles: null,
  highlighted: null,
};

async function loadModels() {
  const response = await fetch("models", { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok || !body || !Array.isArray(body.models)) {
    const { headline, detail } = describeError(response.status, body, response.headers.get("Retry-After"));
    throw new Error(`The model list could not be loaded: ${headline} ${detail}`.trim());
  }
  return body;
}

// ---- classify ------------------------------------------------------------------------------------

function fillModelSelect() {
  const select = $("model");
  select.replaceChildren();
  const byDataset = new Map();
  for (const m of state.models) {
    if (!byDataset.has(m.dataset)) byDataset.set(m.dataset, []);
    byDataset.get(m.dataset).push(m);
  }
  for (const [dataset, models] of byDataset) {
    const group = document.createElement("optgroup");
    group.label = dataset;
    for (const m of models) {
      const option = new Option(m.name + (m.name === state.defaultModel ? " (default)" : ""), m.name);
      if (m.status === "unavailable") {
        option.disabled = true;
        option.textContent += " (unavailable)";
      }
      group.append(option);
    }
    select.append(group);
  }
  select.value = state.defaultModel;
  select.disabled = false;
  syncTopK();
}

function syncTopK() {
  const model = state.models.find((m) => m.name === $("model").value);
  const input = $("top-k");
  if (!model) return;
  input.max = String(model.num_classes);
  if (Number(input.value) > model.num_classes) input.value = String(model.num_classes);
}

async function classify(files) {
  if (!files || files.length === 0) return;
  state.lastFiles = files;
  const error = $("error");
  error.hidden = true;
  $("busy").textContent = "Classifying…";
  try {
    const r = await postClassify(files, $("model").value, $("top-k").value);
    if (r.ok) {
      renderResults($("results"), files, r.body, r.elapsed);
    } else {
      $("results").replaceChildren();
      showError(error, describeError(r.status, r.body, r.retryAfter));
    }
  } catch {
    $("results").replaceChildren();
    showError(error, { headline: "The service could not be reached.", detail: "Check that it is running, then try again." });
  } finally {
    $("busy").textContent = "";
  }
}

function imageFiles(list) {
  return Array.from(list || []);
}

function wireClassify() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    classify(imageFiles(e.target.files));
    e.target.value = ""; // choosing the same file again still fires `change`
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    classify(imageFiles(e.dataTransfer.files));
  });
  // A file dropped beside the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  document.addEventListener("paste", (e) => {
    const files = imageFiles(e.clipboardData && e.clipboardData.files);
    if (files.length > 0) {
      e.preventDefault();
      classify(files);
    }
  });
  $("model").addEventListener("change", () => {
    syncTopK();
    classify(state.lastFiles);
  });
  $("top-k").addEventListener("change", () => classify(state.lastFiles));
  $("classify-form").addEventListener("submit", (e) => e.preventDefault());
}

// ---- compare -------------------------------------------------------------------------------------

function visibleModels() {
  const dataset = $("dataset").value;
  return dataset ? state.models.filter((m) => m.dataset === dataset) : state.models;
}

function highlight(name) {
  for (const node of document.querySelectorAll(".highlight")) node.classList.remove("highlight");
  state.highlighted = name;
  if (!name) return;
  for (const node of document.querySelectorAll(`[data-model="${CSS.escape(name)}"]`)) node.classList.add("highlight");
}

function renderCompare() {
  const models = visibleModels();
  renderTableBody($("models"), $("status-notes"), sortModels(models, state.sortKey, state.descending), state.sortKey, state.descending);
  renderPlot({ container: $("plot"), tip: $("tip"), apartBox: $("apart"), models, x: $("x-axis").value, onHover: highlight });
  for (const tr of $("models").querySelectorAll("tbody tr")) {
    tr.addEventListener("mouseenter", () => highlight(tr.dataset.model));
    tr.addEventListener("mouseleave", () => highlight(null));
  }
}

function onSort(key) {
  if (state.sortKey === key) {
    state.descending = !state.descending;
  } else {
    state.sortKey = key;
    state.descending = false;
  }
  renderCompare();
}

function wireCompare() {
  const datasets = [...new Set(state.models.map((m) => m.dataset))];
  for (const ds of datasets) $("dataset").append(new Option(ds, ds));
  const preferred = state.models.find((m) => m.name === state.defaultModel);
  if (datasets.length > 1 && preferred) $("dataset").value = preferred.dataset;
  // Latency is measured once a model is loaded; until every plotted model has one, start on size.
  const ranked = visibleModels().filter((m) => m.top1 !== null && m.weights !== "random");
  if (ranked.some((m) => !m.latency_ms)) $("x-axis").value = "size_mb";
  renderTableHead($("models"), onSort);
  $("dataset").addEventListener("change", renderCompare);
  $("x-axis").addEventListener("change", renderCompare);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") $("tip").hidden = true;
  });
  let width = $("plot").clientWidth;
  new ResizeObserver(() => {
    if ($("plot").clientWidth !== width) {
      width = $("plot").clientWidth;
      renderCompare();
    }
  }).observe($("plot"));
  renderCompare();
}

async function main() {
  wireClassify();
  try {
    const body = await loadModels();
    state.models = body.models;
    state.defaultModel = body.default;
  } catch (err) {
    showError($("error"), { headline: err.message, detail: "" });
    return;
  }
  fillModelSelect();
  wireCompare();
  document.body.dataset.ready = "true";
}

main();
