"""Pictures of one model's circuits for the report: heatmaps of EQKE, EQKP, EVOU, PVOU and EUPU
(``maxk.circuits.circuit_tables``, float64), and attention patterns on a few inputs, one of them
an input the model gets wrong when there is one. Each figure is a PNG ``data:`` URI."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import MaxNLocator

from ..circuits import CircuitTables
from ..distributions import resolve
from .figures import data_uri, figure

ENUMERATE_LIMIT = 1 << 17  # enumerate every input up to this many, else sample
SAMPLE_INPUTS = 100_000
_CHUNK = 4096

_TABLES = (
    ("EQKE", "eqke", "query token q", "key token t", "attention score (pre-softmax logit)"),
    ("EQKP", "eqkp", "query token q", "key position i", "attention score (pre-softmax logit)"),
    ("EVOU", "evou", "key token t", "output token o", "logit contribution (nats)"),
    ("PVOU", "pvou", "position i", "output token o", "logit contribution (nats)"),
    ("EUPU", "eupu", "query token q", "output token o", "logit contribution (nats)"),
)
_MEANING = {
    "EQKE": "how much query token q attends to key token t",
    "EQKP": "the positional part of the attention score",
    "EVOU": "what key token t writes to each output logit when attended to",
    "PVOU": "what position i writes to each output logit when attended to",
    "EUPU": "the direct path: the query token's own contribution to the logits",
}


def circuit_heatmaps(tables: CircuitTables) -> list[tuple[str, str, str]]:
    """(name, meaning, data URI) for each of EQKE, EQKP, EVOU, PVOU, EUPU: one heatmap per head
    (EUPU has none), diverging colours centred on 0. Cost O(h·n²) pixels."""
    out = []
    for name, attr, ylabel, xlabel, unit in _TABLES:
        arr = np.asarray(getattr(tables, attr))
        per_head = [arr] if arr.ndim == 2 else list(arr)
        fig = figure(min(4.4 * len(per_head), 11), 3.6)
        for h, a in enumerate(per_head):
            ax = fig.add_subplot(1, len(per_head), h + 1)
            lim = float(np.max(np.abs(a))) or 1.0
            im = ax.imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            for axis, size in ((ax.xaxis, a.shape[1]), (ax.yaxis, a.shape[0])):
                axis.set_major_locator(MaxNLocator(nbins=min(size, 9), integer=True))
            ax.set_title(name + (f", head {h}" if len(per_head) > 1 else "") + f" [{a.shape[0]} × {a.shape[1]}]")
            fig.colorbar(im, ax=ax, label=unit)
        out.append((name, _MEANING[name], data_uri(fig)))
    return out


@dataclass(frozen=True)
class Checked:
    """The inputs the chosen model was run on to pick examples.

    tokens: [m, k]; correct: [m] bool (true max's logit strictly above every other);
    predicted: [m] argmax output; margin: [m] true logit minus the largest other logit;
    exhaustive: whether ``tokens`` is every input of the distribution."""

    tokens: np.ndarray
    correct: np.ndarray
    predicted: np.ndarray
    margin: np.ndarray
    exhaustive: bool


def check_inputs(tables: CircuitTables, dist: str, seed: int = 0) -> Checked:
    """Run the model (through its tables) on every input of ``dist`` when there are at most
    ``ENUMERATE_LIMIT``, else on ``SAMPLE_INPUTS`` sampled ones. Cost O(m·h·k·n)."""
    n, k = tables.n, tables.k
    d = resolve(dist, n, k)
    exhaustive = n**k <= ENUMERATE_LIMIT
    tokens = d.enumerate(n, k) if exhaustive else d.sample(n, k, SAMPLE_INPUTS, np.random.default_rng(seed))
    predicted, margin = [], []
    for lo in range(0, len(tokens), _CHUNK):
        t = tokens[lo : lo + _CHUNK]
        logits = tables.logits(t)
        label = t.max(axis=1)
        true = logits[np.arange(len(t)), label]
        others = logits.copy()
        others[np.arange(len(t)), label] = -np.inf
        margin.append(true - others.max(axis=1))
        predicted.append(logits.argmax(axis=1))
    m = np.concatenate(margin)
    return Checked(tokens, m > 0, np.concatenate(predicted), m, exhaustive)


def example_inputs(checked: Checked, count: int = 4, seed: int = 0) -> list[int]:
    """Indices into ``checked`` of ``count`` inputs to draw: the most confidently wrong one (if
    any), the closest call among the correct ones, and random correct ones for the rest."""
    picks: list[int] = []
    wrong = np.flatnonzero(~checked.correct)
    if len(wrong):
        picks.append(int(wrong[np.argmin(checked.margin[wrong])]))
    right = np.flatnonzero(checked.correct)
    if len(right):
        picks.append(int(right[np.argmin(checked.margin[right])]))
    rest = np.setdiff1d(right if len(right) else np.arange(len(checked.tokens)), picks)
    rng = np.random.default_rng(seed)
    if len(rest):
        picks += [int(i) for i in rng.choice(rest, size=min(count - len(picks), len(rest)), replace=False)]
    return picks[:count]


def attention(tables: CircuitTables, tokens: np.ndarray) -> np.ndarray:
    """Attention of the last position on every position: tokens [k] -> [h, k] (rows sum to 1)."""
    q = int(tokens[-1])
    scores = tables.eqke[:, q, tokens] + tables.eqkp[:, q, :]
    scores = scores - scores.max(axis=1, keepdims=True)
    w = np.exp(scores)
    return w / w.sum(axis=1, keepdims=True)


def attention_figure(tables: CircuitTables, checked: Checked, picks: list[int]) -> str:
    """One panel per picked input: the last position's attention on each position (a bar per
    head), the tokens under the bars, and whether the model's answer is right."""
    fig = figure(11, 3.4)
    for j, i in enumerate(picks):
        tok = checked.tokens[i]
        att = attention(tables, tok)
        ax = fig.add_subplot(1, len(picks), j + 1)
        h, k = att.shape
        width = 0.8 / h
        for head in range(h):
            xs = np.arange(k) + (head - (h - 1) / 2) * width
            ax.bar(xs, att[head], width=width, label=f"head {head}" if h > 1 else None)
        big = int(tok.max())
        ax.set_xticks(range(k), [f"{p}\n{t}" + ("*" if t == big else "") for p, t in enumerate(tok)], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("position / token (* = the max)")
        ax.set_ylabel("attention weight (probability)")
        verdict = "right" if checked.correct[i] else "WRONG"
        ax.set_title(
            f"max {big}, answer {int(checked.predicted[i])}: {verdict}\nmargin {checked.margin[i]:+.3g} nats",
            fontsize=9,
            color="black" if checked.correct[i] else "tab:red",
        )
        if h > 1:
            ax.legend(fontsize=7)
    fig.suptitle("Attention of the last position on a few inputs")
    return data_uri(fig)
