// Which models can run on this host, grouped by dataset, and the dataset the page opens on.

/** A model the service can answer with: anything but `unavailable` (artifact not built, checksum, budget). */
export const canRun = (m) => m.status !== "unavailable";

/** Dataset -> its models that can run here, in registry order; datasets with none are left out. */
export function runnableByDataset(models) {
  const groups = new Map();
  for (const m of models.filter(canRun)) {
    if (!groups.has(m.dataset)) groups.set(m.dataset, []);
    groups.get(m.dataset).push(m);
  }
  return groups;
}

/**
 * The dataset the page opens on: the one with the most models that run here, so that the comparison has
 * something to compare (the committed zoo: 18 Fashion-MNIST models against one ImageNet model built).
 * A tie goes to the default model's dataset; with nothing runnable, the default's dataset still.
 */
export function firstDataset(models, defaultName) {
  const fallback = models.find((m) => m.name === defaultName)?.dataset ?? models[0]?.dataset ?? "";
  let best = null;
  let most = 0;
  for (const [dataset, runnable] of runnableByDataset(models)) {
    const wins = runnable.length > most || (runnable.length === most && dataset === fallback);
    if (wins) {
      best = dataset;
      most = runnable.length;
    }
  }
  return best ?? fallback;
}
