// The page: loads GET /models once, then wires the classify form, the side-by-side comparison and the
// catalogue (plot and table) together.

import { canRun, firstDataset, runnableByDataset } from "./catalog.js";
import { autoParams } from "./choice.js";
import { describeError, postImages, renderResults, showError } from "./classify.js";
import { renderPlot, renderTableBody, renderTableHead, sortModels } from "./compare.js";
import { showMonitor } from "./monitor.js";
import { renderRollouts } from "./rollouts.js";
import { checkedModels, compareImage, defaultPair, renderColumns, renderModelChoice } from "./sidebyside.js";

const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  defaultModel: null,
  firstDataset: "",
  showCannotRun: false,
  sortKey: "top1",
  descending: true,
  lastFiles: null,
  sbsFile: null,
  // Each request's number: a constraint changed twice quickly sends two, and only the later may render.
  sent: { classify: 0, compare: 0 },
};

const AUTO = "auto";
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

async function loadModels() {
  const response = await fetch("models", { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok || !body || !Array.isArray(body.models)) {
    const { headline, detail } = describeError(response.status, body, response.headers.get("Retry-After"));
    throw new Error(`The model list could not be loaded: ${headline} ${detail}`.trim());
  }
  return body;
}

/** Fill a dataset select with the datasets that have models running here, `chosen` selected. */
function fillDatasets(select, chosen) {
  const groups = runnableByDataset(state.models);
  select.replaceChildren();
  for (const [dataset, models] of groups) select.append(new Option(`${dataset} (${plural(models.length, "model", "models")})`, dataset));
  if (groups.has(chosen)) select.value = chosen;
}

function wireDrop(zone, onFiles) {
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles(Array.from(e.dataTransfer.files || []));
  });
}

function wireFileInput(input, onFiles) {
  input.addEventListener("change", (e) => {
    onFiles(Array.from(e.target.files || []));
    e.target.value = ""; // choosing the same file again still fires `change`
  });
}

// ---- classify ------------------------------------------------------------------------------------

function fillModelSelect() {
  const select = $("model");
  select.replaceChildren(new Option("auto: the best model meeting constraints", AUTO));
  for (const [dataset, models] of runnableByDataset(state.models)) {
    const group = document.createElement("optgroup");
    group.label = dataset;
    for (const m of models) group.append(new Option(m.name + (m.name === state.defaultModel ? " (default)" : ""), m.name));
    select.append(group);
  }
  const preferred = state.models.find((m) => m.name === state.defaultModel);
  select.value = preferred && canRun(preferred) ? preferred.name : AUTO;
  select.disabled = false;
  fillDatasets($("auto-dataset"), state.firstDataset);
  syncModel();
}

/** The constraint fields show only with auto; top-k is capped by the classes of the model(s) in play. */
function syncModel() {
  const auto = $("model").value === AUTO;
  $("auto-constraints").hidden = !auto;
  const inPlay = auto
    ? state.models.filter((m) => m.dataset === $("auto-dataset").value && canRun(m))
    : state.models.filter((m) => m.name === $("model").value);
  capTopK($("top-k"), inPlay);
}

function capTopK(input, models) {
  if (models.length === 0) return;
  const classes = Math.min(...models.map((m) => m.num_classes));
  input.max = String(classes);
  if (Number(input.value) > classes) input.value = String(classes);
}

function classifyParams() {
  const topK = $("top-k").value;
  if ($("model").value !== AUTO) return { model: $("model").value, top_k: topK };
  const constraints = {
    dataset: $("auto-dataset").value,
    maxLatencyMs: $("max-latency").value,
    minTop1Percent: $("min-top1").value,
    maxSizeMb: $("max-size").value,
  };
  return { ...autoParams(constraints), top_k: topK };
}

async function classify(files) {
  if (!files || files.length === 0) return;
  state.lastFiles = files;
  const error = $("error");
  const number = ++state.sent.classify;
  error.hidden = true;
  $("busy").textContent = "Classifying…";
  try {
    const r = await postImages("classify", files, classifyParams());
    if (number !== state.sent.classify) return;
    if (r.ok) {
      renderResults($("results"), files, r.body, r.elapsed);
      showMonitor($("results"), r.body.model);
    } else {
      $("results").replaceChildren();
      showError(error, describeError(r.status, r.body, r.retryAfter));
    }
  } catch {
    if (number !== state.sent.classify) return;
    $("results").replaceChildren();
    showError(error, { headline: "The service could not be reached.", detail: "Check that it is running, then try again." });
  } finally {
    if (number === state.sent.classify) $("busy").textContent = "";
  }
}

function wireClassify() {
  wireFileInput($("file"), classify);
  wireDrop($("drop"), classify);
  // A file dropped beside a zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  document.addEventListener("paste", (e) => {
    const files = Array.from((e.clipboardData && e.clipboardData.files) || []);
    if (files.length > 0) {
      e.preventDefault();
      classify(files);
    }
  });
  for (const id of ["model", "auto-dataset"]) {
    $(id).addEventListener("change", () => {
      syncModel();
      classify(state.lastFiles);
    });
  }
  for (const id of ["top-k", "max-latency", "min-top1", "max-size"]) $(id).addEventListener("change", () => classify(state.lastFiles));
  $("classify-form").addEventListener("submit", (e) => e.preventDefault());
}

// ---- side by side --------------------------------------------------------------------------------

function sbsRunnable() {
  return runnableByDataset(state.models).get($("sbs-dataset").value) ?? [];
}

function syncSideBySide() {
  const chosen = checkedModels($("sbs-model-list"));
  capTopK($("sbs-top-k"), state.models.filter((m) => chosen.includes(m.name)));
}

async function compareSideBySide(file) {
  if (!file) return;
  state.sbsFile = file;
  const error = $("sbs-error");
  const results = $("sbs-results");
  error.hidden = true;
  const models = checkedModels($("sbs-model-list"));
  const number = ++state.sent.compare;
  if (models.length < 2) {
    $("sbs-busy").textContent = "";
    results.replaceChildren();
    const runnable = sbsRunnable().length;
    const detail = runnable < 2 ? `${$("sbs-dataset").value} has ${plural(runnable, "model", "models")} that can run here; choose another dataset.` : `${models.length} chosen.`;
    showError(error, { headline: "Choose two or more models to compare.", detail });
    return;
  }
  $("sbs-busy").textContent = `Running ${models.length} models…`;
  try {
    const r = await compareImage(file, models, $("sbs-top-k").value);
    if (number !== state.sent.compare) return;
    if (r.ok) {
      renderColumns(results, file, r.body);
    } else {
      results.replaceChildren();
      showError(error, describeError(r.status, r.body, r.retryAfter));
    }
  } catch {
    if (number !== state.sent.compare) return;
    results.replaceChildren();
    showError(error, { headline: "The service could not be reached.", detail: "Check that it is running, then try again." });
  } finally {
    if (number === state.sent.compare) $("sbs-busy").textContent = "";
  }
}

function wireSideBySide() {
  fillDatasets($("sbs-dataset"), state.firstDataset);
  const choose = () => {
    renderModelChoice($("sbs-model-list"), sbsRunnable(), defaultPair(sbsRunnable()));
    syncSideBySide();
  };
  choose();
  $("sbs-dataset").addEventListener("change", () => {
    choose();
    compareSideBySide(state.sbsFile);
  });
  $("sbs-model-list").addEventListener("change", () => {
    syncSideBySide();
    compareSideBySide(state.sbsFile);
  });
  $("sbs-top-k").addEventListener("change", () => compareSideBySide(state.sbsFile));
  $("sbs-form").addEventListener("submit", (e) => e.preventDefault());
  const first = (files) => compareSideBySide(files[0]);
  wireFileInput($("sbs-file"), first);
  wireDrop($("sbs-drop"), first);
}

// ---- catalogue -----------------------------------------------------------------------------------

function datasetModels() {
  const dataset = $("dataset").value;
  return dataset ? state.models.filter((m) => m.dataset === dataset) : state.models;
}

/** The rows shown: the chosen dataset's, less the models that cannot run here unless they are asked for. */
function visibleModels() {
  return datasetModels().filter((m) => state.showCannotRun || canRun(m));
}

function syncToggle(shown) {
  const hidden = datasetModels().filter((m) => !canRun(m)).length;
  const toggle = $("show-unavailable");
  toggle.hidden = hidden === 0;
  toggle.setAttribute("aria-pressed", String(state.showCannotRun));
  const what = `${plural(hidden, "model", "models")} that cannot run here`;
  toggle.textContent = state.showCannotRun ? `Hide the ${what}` : `Show ${what}`;
  const folded = hidden > 0 && !state.showCannotRun ? ` (${what} folded away)` : "";
  $("table-caption").textContent = `${plural(shown, "model", "models")}${folded}; sort by any column.`;
}

function highlight(name) {
  for (const node of document.querySelectorAll(".highlight")) node.classList.remove("highlight");
  if (!name) return;
  for (const node of document.querySelectorAll(`[data-model="${CSS.escape(name)}"]`)) {
    if (node.closest("#catalog")) node.classList.add("highlight");
  }
}

function renderCatalogue() {
  const models = visibleModels();
  syncToggle(models.length);
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
  renderCatalogue();
}

function wireCatalogue() {
  for (const ds of new Set(state.models.map((m) => m.dataset))) $("dataset").append(new Option(ds, ds));
  $("dataset").value = state.firstDataset;
  // Latency is measured once a model is loaded; until every plotted model has one, start on size.
  const ranked = visibleModels().filter((m) => m.top1 !== null && m.weights !== "random");
  if (ranked.some((m) => !m.latency_ms)) $("x-axis").value = "size_mb";
  renderTableHead($("models"), onSort);
  $("dataset").addEventListener("change", renderCatalogue);
  $("x-axis").addEventListener("change", renderCatalogue);
  $("show-unavailable").addEventListener("click", () => {
    state.showCannotRun = !state.showCannotRun;
    renderCatalogue();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") $("tip").hidden = true;
  });
  let width = $("plot").clientWidth;
  new ResizeObserver(() => {
    if ($("plot").clientWidth !== width) {
      width = $("plot").clientWidth;
      renderCatalogue();
    }
  }).observe($("plot"));
  renderCatalogue();
}

async function main() {
  wireClassify();
  try {
    const body = await loadModels();
    state.models = body.models;
    state.defaultModel = body.default;
    state.firstDataset = firstDataset(body.models, body.default);
  } catch (err) {
    showError($("error"), { headline: err.message, detail: "" });
    return;
  }
  fillModelSelect();
  wireSideBySide();
  wireCatalogue();
  renderRollouts($("rollouts"), state.models).catch(() => {});  // an extra: the page works without it
  document.body.dataset.ready = "true";
}

main();
