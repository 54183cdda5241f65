"""Command line of the export stage: `python -m export build|eval|table|version ...`."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from export import versions
from export.build import MODELS_DIR, REGISTRY_PATH, locked, merge_into_registry
from export.table import render
from service.core.registry import ModelEntry, Registry, load_registry, save_registry

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Train, export and measure the convzoo models."
)


class Zoo(str, Enum):  # noqa: UP042 -- typer lists a str Enum as choices
    fashion = "fashion"
    imagenet = "imagenet"


RegistryOpt = Annotated[Path, typer.Option("--registry", help="registry.yaml to update")]
ModelsOpt = Annotated[Path, typer.Option("--out", help="model directory (artifact paths are relative to it)")]


def _names(models: str | None) -> list[str]:
    return [n.strip() for n in models.split(",") if n.strip()] if models else []


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command()
def build(
    zoo: Annotated[Zoo, typer.Option(help="which zoo to build")],
    models: Annotated[str | None, typer.Option(help="comma-separated model names (default: all)")] = None,
    data: Annotated[Path | None, typer.Option(help="Fashion-MNIST IDX directory")] = None,
    epochs: Annotated[int | None, typer.Option(help="override every model's epochs (quick runs)")] = None,
    train_samples: Annotated[int | None, typer.Option(help="train on this many images (quick runs)")] = None,
    threads: Annotated[
        int, typer.Option(help="torch threads for training (1 is fastest on a busy host)")
    ] = 1,
    weights_file: Annotated[Path | None, typer.Option(help="local torchvision checkpoint (ImageNet)")] = None,
    random_weights: Annotated[bool, typer.Option(help="ImageNet: export with random weights")] = False,
    fp16: Annotated[bool, typer.Option(help="ImageNet: export in float16")] = False,
    catalog_only: Annotated[
        bool,
        typer.Option(
            help="ImageNet: record the published catalog, depth/GFLOPs from the graphs, nothing built"
        ),
    ] = False,
    out: ModelsOpt = MODELS_DIR,
    registry: RegistryOpt = REGISTRY_PATH,
) -> None:
    """Build a zoo's artifacts and merge their entries into the registry, then print the table."""
    import torch

    torch.set_num_threads(threads)
    try:
        if zoo is Zoo.fashion:
            _build_fashion(
                _names(models),
                out=out,
                data=data,
                epochs=epochs,
                train_samples=train_samples,
                registry=registry,
            )
        else:
            from export import imagenet

            entries = (
                imagenet.catalog(_names(models))
                if catalog_only
                else imagenet.build(
                    _names(models),
                    out_dir=out / "imagenet",
                    weights_file=weights_file,
                    random_weights=random_weights,
                    fp16=fp16,
                )
            )
            merge_into_registry(registry, entries, imagenet_label_sets())
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(render(load_registry(registry)))


def imagenet_label_sets() -> dict[str, list[str]]:
    from export import imagenet

    label_sets = getattr(imagenet, "label_sets", None)
    return dict(label_sets()) if callable(label_sets) else {}


def _build_fashion(
    names: list[str],
    *,
    out: Path,
    data: Path | None,
    epochs: int | None,
    train_samples: int | None,
    registry: Path,
) -> None:
    from export import reference
    from export.fashion import zoo
    from export.fashion.data import LABELS

    def record(entry: ModelEntry) -> None:
        # each model is written as soon as it is built, so an interrupted run keeps what it finished,
        # with its reference on the test split (docs/monitoring.md)
        tensors = reference.fashion_tensors(entry, data)
        entry, _ = reference.record(entry, out, tensors, "fashion-mnist test split")
        merge_into_registry(registry, [entry], {"fashion-mnist": LABELS})

    zoo.build(
        names,
        out_dir=out,
        data_dir=data,
        overrides=zoo.Overrides(epochs=epochs, train_samples=train_samples),
        on_entry=record,
    )


@app.command("eval")
def evaluate(
    model: Annotated[str, typer.Option(help="model name")],
    data: Annotated[
        Path | None, typer.Option(help="ImageNet val folder, or the Fashion-MNIST IDX directory")
    ] = None,
    out: ModelsOpt = MODELS_DIR,
    registry: RegistryOpt = REGISTRY_PATH,
) -> None:
    """Measure a model's accuracy on a dataset and record it as `measured` in the registry."""
    try:
        if model.startswith("fmnist-"):
            entry = _reevaluate_fashion(model, out=out, data=data, registry=registry)
        else:
            from export import imagenet

            if data is None:
                raise ValueError("--data DIR (an ImageNet validation folder) is required for ImageNet models")
            entry = imagenet.evaluate(model, data, registry_path=registry, models_dir=out)
        merge_into_registry(registry, [entry], {})
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(render(load_registry(registry)))


def _reevaluate_fashion(name: str, *, out: Path, data: Path | None, registry: Path):  # type: ignore[no-untyped-def]
    from export.build import today
    from export.fashion import zoo

    entry = load_registry(registry).get(name)
    top1, top5 = zoo.evaluate(name, models_dir=out, entry=entry, data_dir=data)
    metrics = entry.metrics.model_copy(
        update={
            "top1": round(top1, 4),
            "top5": round(top5, 4),
            "accuracy_source": "measured",
            "accuracy_date": today(),
        }
    )
    return entry.model_copy(update={"metrics": metrics})


@app.command("reference")
def reference_cmd(
    model: Annotated[str, typer.Option("--model", help="comma-separated model names")],
    images: Annotated[
        Path | None,
        typer.Option(
            help="a folder of images the model should see (default for Fashion-MNIST: its test split)"
        ),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Fashion-MNIST IDX directory")] = None,
    out: ModelsOpt = MODELS_DIR,
    registry: RegistryOpt = REGISTRY_PATH,
) -> None:
    """Record each model version's reference (its answers on data it should see), for the service's
    drift statistics and out-of-distribution scores (docs/monitoring.md), beside its artifact."""
    from export import reference

    try:
        for name in _names(model):
            entry = load_registry(registry).get(name)
            if images is not None:
                tensors, source = reference.folder_tensors(entry, images), f"images under {images.name}/"
            elif entry.dataset == "fashion-mnist":
                tensors, source = reference.fashion_tensors(entry, data), "fashion-mnist test split"
            else:
                raise ValueError(f"model {name!r}: --images DIR is needed (a folder of images it should see)")
            updated, built = reference.record(entry, out, tensors, source)
            merge_into_registry(registry, [updated], {})
            typer.echo(
                f"{name} {entry.version}: {built.samples} images ({source}), unusual above "
                f"{built.ood_threshold:.4f} -> {out / reference.path_of(entry)}"
            )
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def table(registry: RegistryOpt = REGISTRY_PATH) -> None:
    """Print the registry as the comparison table."""
    try:
        typer.echo(render(load_registry(registry)))
    except ValueError as exc:
        raise _fail(str(exc)) from None


@app.command("calibrate")
def calibrate_cmd(
    models: Annotated[str | None, typer.Option(help="comma-separated model names (default: all)")] = None,
    seconds: Annotated[float, typer.Option(help="measuring time per model")] = 1.0,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0: one per core)")] = 1,
    providers: Annotated[str, typer.Option(help="auto, cpu or cuda, as CONVZOO_PROVIDERS")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="batch size of the throughput run")] = 32,
    out: ModelsOpt = MODELS_DIR,
    registry: RegistryOpt = REGISTRY_PATH,
) -> None:
    """Re-measure latency and throughput of every available model on this host (ONNX Runtime, no
    PyTorch) and write them to the registry with the host's CPU, GPU, provider and threads."""
    from export import calibrate

    if providers not in ("auto", "cpu", "cuda"):
        raise _fail(f"--providers must be auto, cpu or cuda, not {providers!r}")
    try:
        outcomes = calibrate.calibrate(
            registry_path=registry,
            models_dir=out,
            names=_names(models) or None,
            seconds=seconds,
            threads=threads,
            providers=providers,  # type: ignore[arg-type]
            batch_size=batch_size,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(calibrate.render(outcomes))
    if not any(o.latency is not None for o in outcomes):
        raise _fail("no model could be measured")


@app.command("quantize")
def quantize_cmd(
    model: Annotated[
        str | None,
        typer.Option("--model", help="comma-separated model names (default: every Fashion-MNIST model)"),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Fashion-MNIST IDX directory")] = None,
    calibration_images: Annotated[
        Path | None, typer.Option(help="ImageNet models: a directory of images to calibrate on")
    ] = None,
    agreement_images: Annotated[
        Path | None, typer.Option(help="ImageNet models: other images, to compare the variant with FP32 on")
    ] = None,
    calibration_samples: Annotated[int, typer.Option(help="images to calibrate on")] = 1000,
    seconds: Annotated[float, typer.Option(help="latency measuring time per variant")] = 1.0,
    out: ModelsOpt = MODELS_DIR,
    registry: RegistryOpt = REGISTRY_PATH,
) -> None:
    """Write a static INT8 (QDQ, per-channel) variant of each model as its own registry entry NAME-int8,
    calibrated on training images, with its own measured accuracy, size, parity with FP32 and latency."""
    from export import quantize

    if calibration_samples < 1 or seconds <= 0:
        raise _fail("--calibration-samples and --seconds must be positive")
    try:
        names = _names(model) or quantize.default_names(load_registry(registry))
        for name in names:
            entry = quantize.quantize_entry(
                load_registry(registry),
                name,
                models_dir=out,
                data_dir=data,
                calibration_dir=calibration_images,
                agreement_dir=agreement_images,
                calibration_samples=calibration_samples,
            )
            fp32 = quantize.measure_latency(load_registry(registry).get(name), out, seconds=seconds)
            merge_into_registry(registry, [quantize.measure_latency(entry, out, seconds=seconds)], {})
            typer.echo(quantize.describe(load_registry(registry).get(entry.name), fp32))
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None


version_app = typer.Typer(
    no_args_is_help=True,
    help="A model's versions and serving policy; the running service applies them on SIGHUP (docs/rollouts.md).",
)
app.add_typer(version_app, name="version")


def _update_registry(registry: Path, change: Callable[[Registry], Registry]) -> None:
    try:
        with locked(registry.parent):
            save_registry(change(load_registry(registry)), registry)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{registry}: updated; `kill -HUP <service pid>` applies it")


@version_app.command("add")
def version_add(
    model: str,
    version: str,
    onnx_file: Annotated[
        Path, typer.Argument(help="the new weights' ONNX file, copied into the model directory")
    ],
    registry: RegistryOpt = REGISTRY_PATH,
    out: ModelsOpt = MODELS_DIR,
) -> None:
    """Add VERSION of MODEL beside its others (the policy is unchanged: it serves nobody yet)."""
    _update_registry(registry, lambda r: versions.add_version(r, out, model, version, onnx_file))


@version_app.command("promote")
def version_promote(model: str, version: str, registry: RegistryOpt = REGISTRY_PATH) -> None:
    """VERSION becomes MODEL's stable version (also the way back: promote the previous one)."""
    _update_registry(registry, lambda r: versions.promote(r, model, version))


@version_app.command("canary")
def version_canary(
    model: str,
    version: Annotated[str, typer.Argument(help="the version, or `none` to end the canary")],
    percent: Annotated[float, typer.Option(help="share of the clients, by a hash of their id")] = 10.0,
    registry: RegistryOpt = REGISTRY_PATH,
) -> None:
    """VERSION answers PERCENT of MODEL's clients."""
    _update_registry(
        registry, lambda r: versions.canary(r, model, None if version == "none" else version, percent)
    )


@version_app.command("shadow")
def version_shadow(
    model: str,
    version: Annotated[str, typer.Argument(help="the version, or `none` to end the shadow")],
    percent: Annotated[float, typer.Option(help="share of the requests copied to it")] = 100.0,
    registry: RegistryOpt = REGISTRY_PATH,
) -> None:
    """VERSION gets a copy of PERCENT of MODEL's requests, compared with the answers and never returned."""
    _update_registry(
        registry, lambda r: versions.shadow(r, model, None if version == "none" else version, percent)
    )


@version_app.command("retire")
def version_retire(model: str, version: str, registry: RegistryOpt = REGISTRY_PATH) -> None:
    """Remove VERSION (one the policy does not serve) from MODEL's entry."""
    _update_registry(registry, lambda r: versions.retire(r, model, version))
