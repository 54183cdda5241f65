// Classify: send images to POST /classify and show the predictions, the timing and the errors.

import { renderSelection } from "./choice.js";
import { el } from "./dom.js";
import { renderUnusual } from "./monitor.js";

const HEADLINES = {
  400: "That file is not an image we can read.",
  404: "That model is not in the registry.",
  405: "The service refused that request method.",
  409: "That model is not built on this server.",
  413: "That file is too large.",
  415: "That file is not an image we can read.",
  422: "A setting is out of range.",
  503: "The model is not available right now.",
};

// Problem types whose own title says more than the status's headline.
const TITLED = { "urn:convzoo:problem:no-model-fits": "No model meets the constraints." };

const TIMING_PARTS = ["decode", "preprocess", "queue", "inference"];

/** A short headline and the service's own explanation for a failed request. */
export function describeError(status, problem, retryAfter) {
  const headline = TITLED[problem?.type] ?? HEADLINES[status] ?? `The service failed (HTTP ${status}).`;
  let detail = problem && typeof problem.detail === "string" ? problem.detail : "";
  if (status === 503 && retryAfter) detail += `${detail ? " " : ""}Try again in ${retryAfter} s.`;
  return { headline, detail };
}

/** POST `files` as multipart parts named `file` to `path` with the query `params`;
 * resolves to {ok, body, status, retryAfter, elapsed}. */
export async function postImages(path, files, params) {
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name || "pasted-image");
  const started = performance.now();
  const response = await fetch(`${path}?${new URLSearchParams(params)}`, { method: "POST", body: form });
  const elapsed = performance.now() - started;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { ok: response.ok, status: response.status, body, retryAfter: response.headers.get("Retry-After"), elapsed };
}

/** Horizontal bars, most likely first. */
export function renderPredictions(predictions) {
  const list = el("ol", { class: "bars", "aria-label": "Predictions, most likely first" });
  for (const p of predictions) {
    const item = el("li", { class: "bar-row" });
    const pct = (p.score * 100).toFixed(1);
    item.append(el("span", { class: "bar-label" }, p.label));
    const track = el("span", { class: "bar-track", role: "img", "aria-label": `${pct} percent` });
    const fill = el("span", { class: "bar-fill" });
    fill.style.width = `${Math.max(p.score * 100, 0.5)}%`; // CSSOM, allowed by the page's CSP
    track.append(fill);
    item.append(track, el("span", { class: "bar-score" }, `${pct} %`));
    list.append(item);
  }
  return list;
}

/** The user's image, shown from a blob: URL (the page's CSP allows no other source). */
export function thumbnail(file, alt) {
  const img = el("img", { class: "thumb", alt, width: "112", height: "112" });
  img.src = URL.createObjectURL(file);
  img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  return img;
}

function renderTiming(timing, elapsed) {
  const box = el("div", { class: "timing" });
  box.append(el("h4", {}, "Timing (ms)"));
  const dl = el("dl");
  const rows = TIMING_PARTS.filter((k) => timing[k] !== undefined).map((k) => [k, timing[k]]);
  rows.push(["total (server)", timing.total], ["round trip (browser)", elapsed]);
  for (const [k, v] of rows) {
    if (v === undefined || v === null) continue;
    const pair = el("div");
    pair.append(el("dt", {}, k), el("dd", {}, v.toFixed(2)));
    dl.append(pair);
  }
  box.append(dl);
  return box;
}

function renderHead(body) {
  if (body.selection) return renderSelection(body.selection, body.version);
  const head = el("p", { class: "result-head" });
  head.append("Model ", el("strong", {}, body.model), ` (version ${body.version})`);
  return head;
}

/** Replace the results area with how the model was chosen, one card per image, and the timing. */
export function renderResults(container, files, body, elapsed) {
  container.replaceChildren(renderHead(body));
  body.results.forEach((result, i) => {
    const card = el("article", { class: "result" });
    const figure = el("figure", { class: "thumb-figure" });
    figure.append(
      thumbnail(files[i], `Uploaded image ${result.filename || i + 1}`),
      el("figcaption", {}, `${result.filename || "pasted image"}, ${result.width}×${result.height}`),
    );
    const top = result.predictions[0];
    const main = el("div", { class: "result-main" });
    main.append(el("h3", { class: "top-label" }, top ? top.label : "no prediction"), renderPredictions(result.predictions));
    const unusual = renderUnusual(result);
    if (unusual) main.append(unusual);
    card.append(figure, main);
    container.append(card);
  });
  container.append(renderTiming(body.timing_ms, elapsed));
}

/** Show the error box with a headline and the service's detail. */
export function showError(box, { headline, detail }) {
  box.replaceChildren(el("strong", {}, headline));
  if (detail) box.append(" ", el("span", { class: "detail" }, detail));
  box.hidden = false;
}
