"""Core subcommands: train, import, eval, info, demo."""

from __future__ import annotations

import click

from .. import checkpoint
from ..config import ModelConfig
from ..demo import run_demo
from ..distributions import resolve
from ..exact import evaluate
from ..sampling import evaluate_sampled
from ..train import TRIGGERS
from ..train import train as train_model
from ._app import dist_option, echo_json, main, progress_bar


@main.command()
@click.option("--vocab", "n", type=int, default=64, show_default=True, help="n: tokens 0..n-1")
@click.option("--k", "k", type=int, default=4, show_default=True, help="sequence length")
@click.option("--d-model", type=int, default=32, show_default=True)
@click.option("--d-head", type=int, default=None, help="defaults to d-model")
@click.option("--heads", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=3000, show_default=True)
@click.option("--batch", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option(
    "--trigger",
    type=click.Choice(list(TRIGGERS)),
    default=None,
    help="plant a backdoor: on the trigger's inputs the label is not the max (docs/wick.md)",
)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="output .safetensors")
@click.option("--json", "as_json", is_flag=True, help="print the training record as JSON")
def train(n, k, d_model, d_head, heads, seed, steps, batch, lr, weight_decay, trigger, out, as_json) -> None:
    """Train a model with the paper's recipe (or with a planted trigger) and save it as safetensors."""
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=d_model, d_head=d_head or d_model, n_heads=heads)
    bar, update = progress_bar("training", steps)
    with bar:
        model = train_model(
            cfg,
            seed=seed,
            steps=steps,
            batch=batch,
            lr=lr,
            weight_decay=weight_decay,
            trigger=trigger,
            progress=lambda s, _l: update(s),
        )
    record = model.training_record
    assert record is not None  # train_model always sets it
    checkpoint.save(model, out, record)
    rec = {**record, "out": str(out), "config": cfg.to_dict()}
    if as_json:
        echo_json(rec)
    else:
        click.echo(
            f"trained n={n} k={k} d_model={d_model} seed={seed}: {steps} steps in "
            f"{rec['seconds']:.1f} s, final loss {rec['final_loss']:.4g} -> {out}"
        )


@main.command("import")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="output .safetensors")
def import_(source, out) -> None:
    """Convert a TransformerLens .pth checkpoint to safetensors (no code from the file runs)."""
    model = checkpoint.load(source)
    checkpoint.save(model, out, getattr(model, "training_record", None))
    click.echo(f"imported {source} -> {out} ({model.cfg.to_json()})")


def _evaluate(model, dist: str, samples: int | None, seed: int, show_progress: bool = True):
    if samples is not None:
        bar, update = progress_bar("sampling", samples, show_progress)
        with bar:
            return evaluate_sampled(model, dist, samples, seed=seed, progress=update)
    bar, update = progress_bar("evaluating", model.cfg.d_vocab, show_progress)
    with bar:
        return evaluate(model, dist, progress=update)


def _describe(res) -> str:
    if res.ci95:
        ci = res.ci95
        return (
            f"{res.method} sampling, {res.samples:,} of {res.n_sequences:,} inputs ({res.dist}), "
            f"{res.seconds:.2f} s\n"
            f"  accuracy       {res.accuracy:.6f}  95% CI [{ci['accuracy'][0]:.6f}, {ci['accuracy'][1]:.6f}]\n"
            f"  soft accuracy  {res.soft_accuracy:.6f}  "
            f"95% CI [{ci['soft_accuracy'][0]:.6f}, {ci['soft_accuracy'][1]:.6f}]\n"
            f"  loss           {res.loss:.6g}"
        )
    return (
        f"exhaustive over {res.n_sequences:,} inputs ({res.dist}), {res.seconds:.2f} s\n"
        f"  accuracy       {res.accuracy:.6f}  ({res.correct:,} correct)\n"
        f"  soft accuracy  {res.soft_accuracy:.6f}\n"
        f"  loss           {res.loss:.6g}"
    )


@main.command("eval")
@click.argument("model_path", metavar="MODEL", default="default")
@dist_option()
@click.option("--samples", type=int, default=None, help="stratified sampling with this many inputs")
@click.option("--seed", type=int, default=0, show_default=True, help="sampling seed")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def eval_(model_path, dist, samples, seed, as_json) -> None:
    """Exact accuracy, soft accuracy and loss over every input (or a stratified sample).

    MODEL is a maxk .safetensors file, a TransformerLens .pth checkpoint, or 'default' (the
    shipped model)."""
    model = checkpoint.load(model_path)
    resolve(dist, model.cfg.d_vocab, model.cfg.n_ctx)
    res = _evaluate(model, dist, samples, seed)
    if as_json:
        echo_json({**res.to_dict(), **({"ci95": res.ci95} if res.ci95 else {})})
    else:
        click.echo(_describe(res))


@main.command()
@click.argument("model_path", metavar="MODEL", default="default")
def info(model_path) -> None:
    """Show a model's configuration and training record."""
    model = checkpoint.load(model_path)
    echo_json({"config": model.cfg.to_dict(), "training": getattr(model, "training_record", None)})


@main.command()
@click.option(
    "--out-dir", type=click.Path(file_okay=False), default="maxk-demo", show_default=True, help="where plots go"
)
def demo(out_dir) -> None:
    """Run the main analyses on the shipped paper-config model and print a summary."""
    run_demo(out_dir)
