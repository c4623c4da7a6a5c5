"""`gavel report`: a sweep's runs, read back from any MLflow tracking URI, as one self-contained HTML file plus
Markdown and PNGs, for a security reviewer.

Sections: the value-of-hiding table (per judge and defense, success under white box, transfer, scores and
labels at each budget, with 95% intervals, and what each step of hiding buys, tested with McNemar's test on the
same examples; where one access and budget was attacked several ways, its cell is the union of its attacks); the
strongest attacker (each union beside its attacks' own figures, the examples it united and its queries);
security curves (success against queries on a log axis, white box and transfer as reference lines; success
against eps where the sweep varies it); queries to success as Kaplan-Meier curves (lifelines), failures
censored at the budget; perturbation sizes; a captioned grid of adversarial examples; and what stands behind
every number (config, seed, git revision, library versions), with failed or unfinished runs listed.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from lifelines import KaplanMeierFitter  # noqa: E402

from gavel.experiments.statistics import bootstrap_interval, mcnemar_test, pooled_rate  # noqa: E402
from gavel.experiments.tracking import (  # noqa: E402
    CLASSES_TAG,
    OVERRIDES,
    OVERRIDES_JSON,
    overrides_tags,
    recorded_overrides,
)
from gavel.reports import checks  # noqa: E402
from gavel.reports.curves import CURVE  # noqa: E402
from gavel.reports.summary import SWEEP_PARENT, sweep_parents  # noqa: E402
from gavel.reports.table import run_overrides  # noqa: E402
from gavel.reports.union import (  # noqa: E402
    Member,
    Refusal,
    Union,
    attack_own,
    describe_row,
    load_per_example,
    strongest,
)

STEPS = ("white_box", "score_based", "decision_based", "transfer")
"""The attacker's access, from most to least: open weights, a score API, a labels API, no queries at all."""


@dataclass
class Record:
    run_id: str
    name: str
    status: str
    tags: dict
    params: dict
    metrics: dict
    per_example: dict[str, np.ndarray] | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    start_time: int = 0

    @property
    def threat_model(self) -> str:
        return self.tags.get("threat_model", "?")

    @property
    def budget(self) -> float:
        value = self.params.get("access.budget", "null")
        return math.inf if value in ("null", "None") else float(value)

    def rate(self, key: str = "attack_success_rate") -> str:
        if key not in self.metrics:
            return "n/a"
        low, high = self.metrics.get(f"{key}_ci_low"), self.metrics.get(f"{key}_ci_high")
        interval = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
        return f"{self.metrics[key]:.3f}{interval}"


def collect(experiment: str, sweep: str | None = None) -> list[Record]:
    """Every job's run of the experiment (of one sweep, with `sweep`), finished or not, with its per-example table
    and success curve."""
    if mlflow.get_experiment_by_name(experiment) is None:
        raise ValueError(f"--experiment {experiment}: no such experiment at {mlflow.get_tracking_uri()}")
    query = f"tags.sweep_id = '{sweep}'" if sweep else ""
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=query, output_format="list")
    client = mlflow.MlflowClient()
    records = []
    for run in runs:
        if SWEEP_PARENT in run.data.tags:
            continue
        record = Record(
            run.info.run_id, run.info.run_name, run.info.status, run.data.tags, run.data.params, run.data.metrics,
            start_time=run.info.start_time or 0,
        )  # fmt: skip
        if run.info.status == "FINISHED":
            record.per_example = load_per_example(run.info.run_id)
            history = client.get_metric_history(run.info.run_id, CURVE)
            record.curve = sorted((m.step, m.value) for m in history)
        records.append(record)
    if not records:
        raise ValueError(f"--experiment {experiment}{f' --sweep {sweep}' if sweep else ''}: no runs")
    return sorted(records, key=lambda r: (STEPS.index(r.threat_model) if r.threat_model in STEPS else 9, r.budget))


def _finished(records: list[Record]) -> list[Record]:
    return [r for r in records if r.status == "FINISHED"]


SET_BY_COLUMN = {"attack", "access", "access.budget", "access.output", "defense", "seed", "run_label", "experiment"}
"""Overrides the table shows by its columns (or pools, the seed); any other override sets a row of its own."""


def united(records: list[Record]) -> list[Union | Refusal]:
    """The union of each row's attacks among the finished runs (`reports/union.py`), or the `Refusal` of one."""
    runs = {r.run_id: r for r in _finished(records)}
    members = [Member(r.run_id, r.name, r.tags, r.params, r.start_time) for r in runs.values()]
    return strongest(members, lambda run_id: runs[run_id].per_example)


def union_record(union: Union, records: list[Record]) -> Record:
    """A union as a record of its own: its run id its runs' joined by +, its attack `union(...)`, its overrides
    its row's (its attacks' own left out)."""
    runs = {r.run_id: r for r in records}
    first = runs[union.run_ids[0]]
    settings = [o for o in recorded_overrides(first.tags) if not attack_own(o.lstrip("+").split("=")[0])]
    tags = {k: v for k, v in first.tags.items() if k not in (OVERRIDES, OVERRIDES_JSON)}
    tags |= {"attack": union.name, **overrides_tags(settings)}
    return Record(
        "+".join(union.run_ids), f"{union.name} ({union.where})", "FINISHED", tags, dict(first.params),
        dict(union.metrics), per_example=union.per_example, start_time=max(runs[i].start_time for i in union.run_ids),
    )  # fmt: skip


def value_of_hiding(records: list[Record]) -> tuple[list[list[str]], list[list[str]]]:
    """(the table: a row per judge, defense and any other setting a sweep varies, a column per access and budget
    (and attack, where one access was attacked several ways, or its cell is a union); what each step of hiding buys:
    the drop in success from one access to the next, with a paired bootstrap interval and McNemar's p on the same
    examples). Where an access and budget was attacked several ways, its cell is the strongest attacker, the union
    of its attacks (`strongest_attacker` shows each attack's own figure beside it). Only runs that differ in their
    seed share a cell: their successes are pooled (the newest run of each seed)."""
    unions = [union_record(u, records) for u in united(records) if isinstance(u, Union)]
    unions_by_id = {u.run_id: u for u in unions}
    in_a_union = {run_id for u in unions for run_id in u.run_id.split("+")}
    runs = [r for r in [*_finished(records), *unions] if r.threat_model in STEPS and r.run_id not in in_a_union]
    attacks_per_access = {}
    for r in runs:
        attacks_per_access.setdefault(r.threat_model, set()).add(r.tags.get("attack"))
    groups: dict[tuple, dict[str, dict[str, Record]]] = {}
    for r in sorted(runs, key=lambda r: r.start_time):  # a newer run of the same seed replaces an older one
        column = r.threat_model
        if len(attacks_per_access[r.threat_model]) > 1 or r.run_id in unions_by_id:  # a union is always named
            column += f" {r.tags.get('attack')}"
        if math.isfinite(r.budget) and r.threat_model not in ("white_box", "transfer"):
            column += f" @ {int(r.budget)}"
        overrides = run_overrides(r.tags)
        setting = " ".join(f"{k}={v}" for k, v in sorted(overrides.items()) if k not in SET_BY_COLUMN) or "-"
        row = (r.tags.get("judge", "?"), r.tags.get("defense", "none"), setting)
        groups.setdefault(row, {}).setdefault(column, {})[r.params.get("seed", "?")] = r
    columns = sorted(
        {c for cells in groups.values() for c in cells},
        key=lambda c: (STEPS.index(c.split(" ")[0]), c.split(" @ ")[0], float(c.split(" @ ")[1]) if " @ " in c else 0),
    )
    table = [["judge", "defense", "setting", *columns]]
    gains = [["judge", "defense", "setting", "from", "to", "success drop [95% interval]", "McNemar p (same examples)"]]
    for (judge, defense, setting), by_column in sorted(groups.items()):
        cells = {column: list(by_seed.values()) for column, by_seed in by_column.items()}
        table.append([judge, defense, setting, *((_pooled(cells[c]) if c in cells else "-") for c in columns)])
        # each access at its strongest: the largest budget it was attacked with, the best attack there (the union
        # of its attacks, where they were united)
        steps = []
        for step in STEPS:
            mine = [c for c in cells if c.split(" ")[0] == step]
            if mine:
                largest = max(cells[c][0].budget for c in mine)
                at_largest = [c for c in mine if cells[c][0].budget == largest]
                steps.append(cells[max(at_largest, key=lambda c: _rate(cells[c]))])
        for before, after in zip(steps, steps[1:]):
            paired = _paired(before, after)
            if isinstance(paired, str):
                change, test = f"{_rate(before) - _rate(after):+.3f}", paired
            else:  # the drop, its interval and the test, all on the same paired examples
                first, second = paired
                interval = bootstrap_interval(lambda a, b: a.mean() - b.mean(), (first, second))
                result = mcnemar_test(first, second)
                change = f"{first.mean() - second.mean():+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]"
                test = f"{result.p_value:.3g} ({result.only_first} vs {result.only_second} discordant)"
            gains.append([judge, defense, setting, before[0].name, after[0].name, change, test])
    return table, gains


def strongest_attacker(records: list[Record]) -> list[list[str]] | None:
    """A row per union (`reports/union.py`): where, its attacks with each one's success, the union's success
    [95% interval], the examples it united and left out, and the queries an attacker running them all spends per
    example; and a row for each row whose attacks were not united, saying why. None: no row was attacked twice."""
    found = united(records)
    if not found:
        return None
    table = [["row", "attacks: each one's success", "union's success [95% interval]", "examples", "left out",
              "queries per example (sum)"]]  # fmt: skip
    runs = {r.run_id: r for r in records}
    for item in found:
        each = ", ".join(f"{runs[m.run_id].tags.get('attack', '?')} {runs[m.run_id].rate()}" for m in item.members)
        if isinstance(item, Refusal):
            table.append([describe_row(item.members[0]), each, f"no union: {item.why}", "-", "-", "-"])
            continue
        m = item.metrics
        queries = f"{m['queries_mean']:.0f}" if "queries_mean" in m else "-"
        table.append([item.where, each, f"{item.name} {union_record(item, records).rate()}", f"{m['n_attacked']:.0f}",
                      f"{m['examples_left_out']:.0f}", queries])  # fmt: skip
    return table


def _pool(runs: list[Record]):
    """`pooled_rate` of the success rates of `runs` (the seeds of one configuration)."""
    return pooled_rate([(r.metrics["attack_success_rate"], r.metrics["n_attacked"]) for r in runs])


def _rate(runs: list[Record]) -> float:
    return _pool(runs)[0]


def _pooled(runs: list[Record]) -> str:
    if len(runs) == 1:
        return runs[0].rate()
    rate, _, _, interval = _pool(runs)
    return f"{rate:.3f} [{interval.low:.3f}, {interval.high:.3f}] ({len(runs)} seeds)"


def _paired(first: list[Record], second: list[Record]) -> tuple[np.ndarray, np.ndarray] | str:
    """Each example's success under both configurations (the examples both attacked, each seed's run paired with
    the other's), or why they cannot be paired."""
    a_success, b_success = [], []
    by_seed = {r.params.get("seed"): r for r in second}
    for a in first:
        b = by_seed.get(a.params.get("seed"))
        if b is None or a.per_example is None or b.per_example is None:
            return "n/a (no per-example table for every seed)"
        if not np.array_equal(a.per_example["index"], b.per_example["index"]):
            return "n/a (not the same examples)"
        attacked = (a.per_example["attacked"] > 0) & (b.per_example["attacked"] > 0)
        a_success.append(a.per_example["success"][attacked] > 0)
        b_success.append(b.per_example["success"][attacked] > 0)
    return np.concatenate(a_success), np.concatenate(b_success)


def _access(r: Record) -> str:
    return f"{r.tags.get('access.weights', '?')} weights, {r.tags.get('access.output', '?')}"


def security_curves(records: list[Record]) -> dict[str, plt.Figure]:
    """Success against queries (log x) on one plot, one colour per access policy (weights and output; line
    style per attack and budget), white box and transfer as reference lines; success against eps where the
    sweep varies it, one colour per access policy and threat model."""
    figures = {}
    done = _finished(records)
    references = [r for r in done if r.threat_model in ("white_box", "transfer")]
    curves = [r for r in done if r.curve]
    policies = sorted({_access(r) for r in [*curves, *references]})
    colour = {policy: plt.cm.tab10(i % 10) for i, policy in enumerate(policies)}
    if curves:
        fig, ax = plt.subplots(figsize=(8, 5))
        styles = ("-", "--", ":", "-.")
        variants = sorted({(r.tags.get("attack"), r.budget) for r in curves}, key=str)
        for r in curves:
            style = styles[variants.index((r.tags.get("attack"), r.budget)) % len(styles)]
            ax.plot([s for s, _ in r.curve], [v for _, v in r.curve], marker=".", linestyle=style,
                    color=colour[_access(r)], label=_plain(f"{r.name} ({_access(r)})"))  # fmt: skip
        for r, style in zip(references, ("--", ":", "-.", "--")):
            ax.axhline(r.metrics["attack_success_rate"], linestyle=style, color=colour[_access(r)], alpha=0.8,
                       label=_plain(f"{r.name} ({_access(r)}, reference)"))  # fmt: skip
        ax.set(xscale="log", xlabel="queries per example", ylabel="attack success rate", ylim=(0, 1))
        ax.set_title("security curves: success against queries, one colour per access policy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        figures["security_curves.png"] = fig
    eps_values = {r.params.get("attack.eps") for r in done}
    if len(eps_values) > 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        by_model: dict[str, list[Record]] = {}
        for r in done:
            by_model.setdefault(f"{r.threat_model}, {_access(r)}", []).append(r)
        for label, runs in sorted(by_model.items()):
            runs = sorted(runs, key=lambda r: float(r.params.get("attack.eps", "nan")))
            ax.plot([float(r.params["attack.eps"]) for r in runs],
                    [r.metrics["attack_success_rate"] for r in runs], marker="o", label=_plain(label))  # fmt: skip
        ax.set(xlabel="eps", ylabel="attack success rate", ylim=(0, 1), title="success against eps")
        ax.legend(fontsize=7)
        figures["security_eps.png"] = fig
    return figures


def kaplan_meier(records: list[Record]) -> tuple[plt.Figure | None, dict[str, KaplanMeierFitter]]:
    """Queries to success per query attack: 1 - survival, with failures censored at the queries they spent (the
    budget, when it bound)."""
    fitted = {}
    for r in _finished(records):
        if r.per_example is None or not r.curve:
            continue
        attacked = r.per_example["attacked"] > 0
        success = r.per_example["success"][attacked] > 0
        spent = r.per_example["queries"][attacked]
        if "queries_to_success" in r.per_example:  # the query that fooled it (a library attack may query on)
            seen = r.per_example["queries_to_success"][attacked]
            spent = np.where(success & (seen > 0), seen, spent)
        fitter = KaplanMeierFitter(label=_plain(r.name))
        fitter.fit(np.maximum(spent, 1), success)
        fitted[r.name] = fitter
    if not fitted:
        return None, fitted
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, fitter in fitted.items():
        fitter.plot_cumulative_density(ax=ax, ci_show=True)
    ax.set(xscale="log", xlabel="queries", ylabel="fooled (Kaplan-Meier)", ylim=(0, 1), title="queries to success")
    ax.legend(fontsize=6)
    return fig, fitted


def perturbations(records: list[Record]) -> plt.Figure | None:
    runs = [r for r in _finished(records) if r.per_example is not None and (r.per_example["success"] > 0).any()]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        linf = r.per_example["linf"][r.per_example["success"] > 0]
        ax.hist(linf, bins=20, alpha=0.5, label=_plain(f"{r.name} ({len(linf)})"))
    ax.set(xlabel="L-inf size of successful perturbations", ylabel="examples", title="perturbation sizes")
    ax.legend(fontsize=6)
    return fig


def judge_pin(tags: dict) -> str:
    """Which judge a run judged, as its tags pin it: a file's SHA-256, a registry's URI and version, or the cache
    key of a judge gavel trained."""
    if "judge.uri" in tags:
        version = f" (version {tags['judge.model_version']})" if "judge.model_version" in tags else ""
        sha = f", sha256 {tags['judge.sha256']}" if "judge.sha256" in tags else ""
        return f"{tags['judge.uri']}{version}{sha}"
    if "judge.sha256" in tags:
        return f"{Path(tags.get('judge.file', '?')).name}, sha256 {tags['judge.sha256']}"
    if "judge_key" in tags:
        return f"trained by gavel, cache key {tags['judge_key']}"
    return "?"


def judges(records: list[Record]) -> list[list[str]]:
    """Each judge the runs judged: its option, what pins it, its data and classes, and how many runs judged it."""
    seen: dict[tuple, int] = {}
    for r in records:
        key = (r.tags.get("judge", "?"), judge_pin(r.tags), r.tags.get("dataset", "?"), r.tags.get(CLASSES_TAG, "?"))
        seen[key] = seen.get(key, 0) + 1
    return [["judge", "pinned by", "data", "classes", "runs"], *([*key, str(n)] for key, n in seen.items())]


def provenance(records: list[Record]) -> list[list[str]]:
    rows = [["run", "status", "judge", "config (the job's overrides)", "seed", "git revision", "versions", "run id"]]
    for r in records:
        # each override as the job was given it; the run label is the run's name already
        overrides = " ".join(o for o in recorded_overrides(r.tags) if o.lstrip("+").split("=")[0] != "run_label")
        rows.append([r.name, r.status, judge_pin(r.tags), overrides or "(defaults)", r.params.get("seed", "?"),
                     r.tags.get("git_sha", "?")[:12], r.tags.get("versions", "?"), r.run_id])  # fmt: skip
    return rows


POISONING_FIGURES = ("poison_recall", "poison_precision", "honest_removed_fraction")


def poisoning(records: list[Record]) -> tuple[list[list[str]] | None, plt.Figure | None]:
    """The backdoor runs: a row per poison, fraction and sanitiser (backdoor success with its interval, clean accuracy
    of the judge and of the clean judge, what the sanitiser removed), and backdoor success against the fraction,
    a panel per poison and a line per sanitiser."""
    runs = [r for r in _finished(records) if r.threat_model == "poisoning" and "backdoor_success_rate" in r.metrics]
    if not runs:
        return None, None
    fraction = lambda r: float(r.params.get("poison.fraction", "nan"))  # noqa: E731
    sanitiser = lambda r: r.tags.get("sanitise", "none")  # noqa: E731
    runs.sort(key=lambda r: (r.tags.get("poison", ""), sanitiser(r) != "none", sanitiser(r), fraction(r)))
    table = [["poison", "sanitiser", "fraction", "backdoor success [95% interval]", "clean accuracy",
              "clean judge's", "poison recall", "poison precision", "honest removed"]]  # fmt: skip
    for r in runs:
        m = r.metrics
        figures = [f"{m[k]:.3f}" if k in m else "-" for k in POISONING_FIGURES]
        table.append([r.tags.get("poison", "?"), sanitiser(r), r.params.get("poison.fraction", "?"),
                      r.rate("backdoor_success_rate"), f"{m.get('clean_accuracy', float('nan')):.3f}",
                      f"{m.get('clean_accuracy_clean_judge', float('nan')):.3f}", *figures])  # fmt: skip
    poisons = sorted({r.tags.get("poison", "?") for r in runs})
    fig, axes = plt.subplots(1, len(poisons), figsize=(4.2 * len(poisons), 3.6), squeeze=False, sharey=True)
    for ax, poison in zip(axes[0], poisons):
        by_sanitiser: dict[str, list[Record]] = {}
        for r in runs:
            if r.tags.get("poison") == poison:
                by_sanitiser.setdefault(sanitiser(r), []).append(r)
        for name, lines in by_sanitiser.items():  # in the table's order: none first
            x = [fraction(r) for r in lines]
            y = [r.metrics["backdoor_success_rate"] for r in lines]
            low = [v - r.metrics.get("backdoor_success_rate_ci_low", v) for v, r in zip(y, lines)]
            high = [r.metrics.get("backdoor_success_rate_ci_high", v) - v for v, r in zip(y, lines)]
            style = {"color": "black", "linestyle": "--", "zorder": 3} if name == "none" else {}  # the baseline
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=2, label=_plain(name), **style)
        ax.set(xscale="log", xlabel="poisoned fraction of the training pool", ylim=(0, 1), title=_plain(poison))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("backdoor success rate")
    axes[0][-1].legend(fontsize=7, title="sanitiser", title_fontsize=7)
    return table, fig


def example_grid(records: list[Record]) -> tuple[bytes, str] | None:
    for r in _finished(records):
        if r.per_example is not None and (r.per_example["success"] > 0).any():
            try:
                path = mlflow.artifacts.download_artifacts(f"runs:/{r.run_id}/adversarial_grid.png")
            except Exception:
                continue
            return Path(path).read_bytes(), f"Adversarial examples of {r.name} with their perturbations"
    return None


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _plain(text: str) -> str:
    """A label for matplotlib, drawn as written: a $ would start mathtext (and a run name's `$\\x$` stop the
    drawing)."""
    return text.replace("$", r"\$")


MD_ESCAPED = re.compile(r"[\\`*|~$]|_(?![^\W_])|(?<![^\W_])_|\](?=[(\[:])|\[(?=\^)")
"""What a Markdown inline reads as syntax (code, emphasis, a table's cell boundary, strikethrough, GitHub's maths,
a link's or footnote's brackets): written backslash-escaped, as CommonMark allows for any ASCII punctuation. An _
between two letters or digits (`white_box`) is no emphasis, and brackets are a link only with a ] followed by
( [ or : (the report defines no references): the rest, an interval's `[0.389, 0.527]`, stays as it is."""
MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;", "\n": "<br>"}
"""Raw HTML and entities, written as entities (the same in every Markdown dialect); a newline, which would end the
table's row, as a line break."""


def md_text(text) -> str:
    """`text` as Markdown inline text that renders as `text`: nothing in it is read as syntax or HTML, and a
    table's cell keeps it whole."""
    text = MD_ESCAPED.sub(lambda m: "\\" + m.group(), str(text))
    return "".join(MD_ENTITIES.get(char, char) for char in text)


def html_text(text) -> str:
    """`text` as HTML text (or an attribute's value, quotes escaped too), its line breaks kept."""
    return html.escape(str(text)).replace("\r\n", "\n").replace("\n", "<br>")


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_text(c) for c in rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows[1:]])


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html_text(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(experiment: str, records: list[Record], out: Path) -> list[Path]:
    """report.html (images inline), report.md and the PNGs in `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    table, gains = value_of_hiding(records)
    images: list[tuple[str, bytes, str]] = [
        (name, _png(fig), f"Success against queries or eps ({name})") for name, fig in security_curves(records).items()
    ]
    km, _ = kaplan_meier(records)
    if km is not None:
        images.append(("queries_to_success_km.png", _png(km), "Queries to success (Kaplan-Meier, 95% bands)"))
    sizes = perturbations(records)
    if sizes is not None:
        images.append(("perturbations.png", _png(sizes), "Sizes of the successful perturbations"))
    poisoned, poisoning_figure = poisoning(records)
    if poisoning_figure is not None:
        images.append(("poisoning.png", _png(poisoning_figure), "Backdoor success against the poisoned fraction"))
    grid = example_grid(records)
    if grid is not None:
        images.append(("adversarial_examples.png", *grid))
    missing = [[r.name, r.status, r.run_id] for r in records if r.status != "FINISHED"]
    sections = [
        ("The judges", judges(records), "Each judge audited, pinned by its file's SHA-256 or registry version."),
        ("The value of hiding", table, "Success rate [95% interval] per judge and defense, by the attacker's access."),
        ("What each step of hiding buys", gains, "Success lost from one access to the next, on the same examples."),
        ("The strongest attacker", strongest_attacker(records), "None: each row was attacked one way."),
        *([("Poisoning by contributors", poisoned, "")] if poisoned else []),
        ("Runs missing or failed", [["run", "status", "run id"], *missing] if missing else None, "None."),
        ("Behind every number", provenance(records), "Each run's judge, seed, git revision and library versions."),
    ]
    written = []
    for name, data, _ in images:
        (out / name).write_bytes(data)
        written.append(out / name)
    md = [f"# gavel report: {md_text(experiment)}", ""]
    page = [f"<html><head><meta charset='utf-8'><title>gavel report: {html.escape(experiment)}</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}img{max-width:900px}</style></head><body>",
            f"<h1>gavel report: {html.escape(experiment)}</h1>"]  # fmt: skip
    sentence, warned = checks.section(records)  # first: what not to trust below
    md += ["## Sanity checks", "", md_text(sentence), "", *([_md_table(warned), ""] if warned else [])]
    page += ["<h2>Sanity checks</h2>", f"<p>{html_text(sentence)}</p>", *([_html_table(warned)] if warned else [])]
    for title, rows, caption in sections:
        md += [f"## {md_text(title)}", "", md_text(caption) if rows is None else _md_table(rows), ""]
        page += [f"<h2>{html.escape(title)}</h2>", html.escape(caption) if rows is None else _html_table(rows)]
    md += ["## Figures", ""]
    page.append("<h2>Figures</h2>")
    for name, data, caption in images:
        md += [f"![{md_text(caption)}]({name})", "", md_text(caption), ""]
        encoded = base64.b64encode(data).decode()
        page.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    # A reader's browser says how many figures it drew (the browser test reads it back from the rendered page).
    page.append(
        "<script>window.addEventListener('load', () => { document.body.dataset.imagesDrawn = "
        "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; });</script>"
    )
    page.append("</body></html>")
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text("\n".join(page))
    return [out / "report.html", out / "report.md", *written]


def report(experiment: str, sweep: str | None, out: Path) -> list[Path]:
    """Write the report; log it to the sweep's parent run when there is one."""
    records = collect(experiment, sweep)
    written = write_report(experiment, records, out)
    sweeps = {r.tags.get("sweep_id") for r in records} - {None}
    if len(sweeps) == 1:
        (sweep_id,) = sweeps
        for parent in sweep_parents(experiment, sweep_id):
            for path in written:
                mlflow.MlflowClient().log_artifact(parent.info.run_id, str(path), artifact_path="report")
    return written
