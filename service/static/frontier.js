// Pure helpers for the comparison: which models can be plotted, the Pareto frontier, log-scale ticks.

/** Why a model has no place on the accuracy plot for axis `x`, or null when it has one. */
export function plotExclusion(model, x) {
  if (model.weights === "random") return "random weights";
  if (model.top1 === null || model.top1 === undefined) return "no accuracy";
  const v = model[x];
  if (v === null || v === undefined) return x === "latency_ms" ? "latency not measured yet" : `no ${AXES[x].short}`;
  if (!(v > 0)) return `${AXES[x].short} is zero`;
  return null;
}

export const AXES = {
  latency_ms: { label: "Latency, p50 batch 1 (ms)", short: "latency" },
  size_mb: { label: "Size (MB)", short: "size" },
  gflops: { label: "GFLOPs", short: "GFLOPs" },
};

/**
 * The models that no other model beats on both cost (lower x) and accuracy (higher top-1),
 * in order of increasing cost. Only plottable models are considered.
 */
export function paretoFrontier(models, x) {
  const sorted = models
    .filter((m) => plotExclusion(m, x) === null)
    .slice()
    .sort((a, b) => a[x] - b[x] || b.top1 - a.top1);
  const frontier = [];
  let best = -Infinity;
  for (const m of sorted) {
    if (m.top1 > best) {
      frontier.push(m);
      best = m.top1;
    }
  }
  return frontier;
}

/** Ticks for a log axis over [lo, hi]: 1-2-5 steps per decade, thinned to about `maxTicks`. */
export function logTicks(lo, hi, maxTicks = 6) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
    }
  }
  if (ticks.length <= maxTicks) return ticks;
  const decades = ticks.filter((v) => Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9);
  if (decades.length >= 2) return decades;
  return ticks.filter((_, i) => i % Math.ceil(ticks.length / maxTicks) === 0);
}

/** The [lo, hi] domain of a log axis holding `values`, padded a little on both sides. */
export function logDomain(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) {
    lo /= 2;
    hi *= 2;
  }
  const pad = (Math.log10(hi) - Math.log10(lo)) * 0.08;
  return [10 ** (Math.log10(lo) - pad), 10 ** (Math.log10(hi) + pad)];
}

export function formatNumber(v, digits = 3) {
  if (v === null || v === undefined) return "—";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString("en-US");
  return Number(v.toPrecision(digits)).toString();
}

export function formatCount(v) {
  if (v === null || v === undefined) return "—";
  if (v >= 1e9) return `${formatNumber(v / 1e9)} G`;
  if (v >= 1e6) return `${formatNumber(v / 1e6)} M`;
  if (v >= 1e3) return `${formatNumber(v / 1e3)} k`;
  return String(v);
}

export function formatPercent(v) {
  if (v === null || v === undefined) return "—";
  return `${(v * 100).toFixed(1)} %`;
}
