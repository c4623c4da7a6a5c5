"""The strongest attacker per row: the per-example union of a row's attacks on hand-made per-example tables, which
runs it unites (and refuses to), its row in the sweep table, its column in the report, and `gavel gate` binding on
it by default."""

from __future__ import annotations

import json
import uuid

import mlflow
import numpy as np
import pytest

from gavel.experiments.cli import gate_command
from gavel.experiments.metrics import PER_EXAMPLE_COLUMNS
from gavel.experiments.statistics import rate_interval
from gavel.reports.report import Record, strongest_attacker, value_of_hiding
from gavel.reports.table import format_table
from gavel.reports.union import Member, NotSameExamples, Refusal, Union, strongest, union_metrics, union_rows, unite


def frame(success, attacked=None, queries=None, index=None, labels=None, initial=None) -> dict[str, np.ndarray]:
    """A per-example table as `load_per_example` reads it back (every column a float array)."""
    n = len(success)
    return {
        "index": np.arange(n, dtype=float) if index is None else np.array(index, dtype=float),
        "label": np.zeros(n) if labels is None else np.array(labels, dtype=float),
        "initial_prediction": np.zeros(n) if initial is None else np.array(initial, dtype=float),
        "attacked": np.ones(n) if attacked is None else np.array(attacked, dtype=float),
        "success": np.array(success, dtype=float),
        "queries": np.full(n, 10.0) if queries is None else np.array(queries, dtype=float),
    }


def test_an_example_fooled_by_one_attack_of_two_counts_once():
    first = frame([1, 1, 0, 0, 0], queries=[3, 5, 10, 10, 10])
    second = frame([0, 1, 1, 0, 0], queries=[10, 2, 7, 10, 10])
    united = unite([first, second])
    assert united["success"].tolist() == [True, True, True, False, False]
    assert united["queries"].tolist() == [13, 7, 17, 20, 20]  # an attacker that runs both pays both
    metrics = union_metrics(united, charged=True)
    interval = rate_interval(3, 5)
    assert metrics["attack_success_rate"] == pytest.approx(3 / 5) and metrics["n_attacked"] == 5
    assert (metrics["attack_success_rate_ci_low"], metrics["attack_success_rate_ci_high"]) == (
        interval.low,
        interval.high,
    )
    assert metrics["queries_mean"] == pytest.approx((13 + 7 + 17 + 20 + 20) / 5) and metrics["queries_median"] == 17
    assert metrics["robust_accuracy"] == pytest.approx(2 / 5) and metrics["clean_accuracy"] == 1.0
    assert "queries_mean" in union_metrics(united, charged=False)  # a transfer attack's one query each, say
    silent = unite([frame([1, 0], queries=[0, 0]), frame([0, 0], queries=[0, 0])])
    assert "queries_mean" not in union_metrics(silent, charged=False)  # white box: no query sent, no query figure


def test_examples_not_attacked_by_every_attack_are_left_out_and_counted():
    # example 0: the first attack's run judged it wrong already (a randomised judge), so only the second attacked
    # it; example 3: neither did
    first = frame([0, 1, 0, 0], attacked=[0, 1, 1, 0], initial=[1, 0, 0, 1])
    second = frame([1, 0, 0, 0], attacked=[1, 1, 1, 0], initial=[0, 0, 0, 1])
    united = unite([first, second])
    assert united["attacked"].tolist() == [False, True, True, False]
    assert united["left_out"].tolist() == [True, False, False, False]
    assert united["success"].tolist() == [False, True, False, False]  # the left-out success is not counted
    metrics = union_metrics(united, charged=True)
    assert metrics["attack_success_rate"] == 0.5 and metrics["n_attacked"] == 2
    assert metrics["examples_left_out"] == 1
    assert "robust_accuracy" not in metrics  # not knowable with an example left out: left out, not guessed


@pytest.mark.parametrize(
    "other, column",
    [
        (frame([0, 0, 0], index=[0, 1, 3]), "index"),
        (frame([0, 0, 0, 0]), "index"),
        (frame([0, 0, 0], labels=[0, 1, 0]), "label"),
    ],
)
def test_tables_of_other_examples_are_never_united(other, column):
    with pytest.raises(NotSameExamples, match=f"differ in their {column} column"):
        unite([frame([1, 0, 0]), other])


def test_no_example_attacked_by_every_attack_has_no_rate():
    with pytest.raises(ValueError, match="no example was attacked by every attack"):
        union_metrics(unite([frame([1, 0], attacked=[1, 0]), frame([0, 1], attacked=[0, 1])]), charged=True)


def member(attack: str, budget="100", *, start: int = 0, threat_model="decision_based", **overrides) -> Member:
    tags = {
        "threat_model": threat_model,
        "attack": attack,
        "access.output": "label",
        "access.weights": "hidden",
        "defense": "none",
        "norm": "Linf",
        "dataset": "digits",
        "judge": "cnn",
        "judge_key": overrides.pop("judge_key", "k1"),
        "overrides": " ".join(f"{k}={v}" for k, v in {"attack": attack, **overrides}.items()),
    }
    params = {"access.budget": budget, "attack.eps": "0.1", "seed": "0", "n_examples": "5"}
    return Member(f"{attack}-{budget}-{start}-{overrides}", f"{attack} b{budget}", tags, params, start)


def test_a_row_unites_the_newest_run_of_each_attack_and_nothing_across_rows():
    frames = {}
    runs = [
        member("hopskipjump", start=1),
        member("hopskipjump", start=2),  # a newer run of the same configuration: it replaces the older
        member("rays", start=1),
        member("rays", "1000"),  # another budget: another row, with one attack, so no union
        member("rays", targeted="true"),  # another goal: another row
        member("backdoor", threat_model="poisoning"),
        member("badnets", threat_model="poisoning"),
    ]
    for i, run in enumerate(runs):
        frames[run.run_id] = frame([i == 0, i == 1, i == 2, 0, 0])
    (union,) = strongest(runs, frames.get)
    assert isinstance(union, Union) and union.name == "union(hopskipjump,rays)"
    assert set(union.run_ids) == {runs[1].run_id, runs[2].run_id}
    assert union.metrics["attack_success_rate"] == pytest.approx(2 / 5)  # examples 1 and 2, not the older run's 0


def test_an_attacks_own_hyperparameters_join_its_rows_union():
    runs = [member("square"), member("square", **{"attack.p_init": "0.3"}), member("hopskipjump")]
    frames = {run.run_id: frame([1, 0, 0]) for run in runs}
    (union,) = strongest(runs, frames.get)
    assert union.name == "union(hopskipjump,square x2)"


@pytest.mark.parametrize(
    "second, why",
    [
        (member("rays", judge_key="k2"), "not the same examples (judge differs"),
        (member("rays", **{"n_examples": "9"}), None),  # an override of its own: another row, nothing to unite
    ],
)
def test_runs_on_other_examples_are_refused_with_the_reason(second, why):
    runs = [member("hopskipjump"), second]
    found = strongest(runs, lambda run_id: frame([1, 0]))
    if why is None:
        assert found == []
        return
    (refusal,) = found
    assert isinstance(refusal, Refusal) and why in refusal.line()
    assert refusal.line().startswith(
        "no union at decision_based, output label, budget 100, seed 0 of hopskipjump, rays"
    )


def test_a_run_without_its_per_example_table_is_refused():
    runs = [member("hopskipjump"), member("rays")]
    (refusal,) = strongest(runs, lambda run_id: None if run_id.startswith("rays") else frame([1, 0]))
    assert "no per-example table for rays b100" in refusal.line()


def table_row(run: Member, success: float, n: int = 5) -> dict:
    return {
        "run_id": run.run_id,
        "name": run.name,
        "status": "FINISHED",
        "start_time": run.start_time,
        "tags": run.tags,
        "params": run.params,
        "threat_model": run.tags["threat_model"],
        "attack": run.tags["attack"],
        "defense": "none",
        "output": "label",
        "budget": run.params["access.budget"],
        "eps": "Linf 0.1",
        "overrides": {"attack": run.tags["attack"]},
        "attack_success_rate": success,
        "n_attacked": float(n),
        "queries_median": 10.0,
    }


def test_the_sweep_table_shows_the_union_beside_its_attacks_own_rows():
    runs = [member("hopskipjump"), member("rays"), member("zoo", threat_model="score_based")]
    frames = {runs[0].run_id: frame([1, 0, 0, 0, 0]), runs[1].run_id: frame([1, 1, 0, 0, 0])}
    rows = [table_row(runs[0], 0.2), table_row(runs[1], 0.4), table_row(runs[2], 0.0)]
    unions, notes = union_rows(rows, frames.get)
    assert notes == [] and len(unions) == 1
    lines = format_table(rows + unions).splitlines()[2:]
    assert [line.split()[:2] for line in lines] == [
        ["score_based", "zoo"],
        ["decision_based", "hopskipjump"],
        ["decision_based", "rays"],
        ["decision_based", "union(hopskipjump,rays)"],
    ]
    interval = rate_interval(2, 5)
    assert f"0.400         [{interval.low:.3f}, {interval.high:.3f}]  20" in lines[3]  # median of the summed queries


def test_the_report_measures_each_step_of_hiding_on_the_union():
    def record(attack: str, threat_model: str, budget, success: list[int]) -> Record:
        run = member(attack, "null" if budget is None else str(budget), threat_model=threat_model)
        n, hits = len(success), sum(success)
        interval = rate_interval(hits, n)
        metrics = {"attack_success_rate": hits / n, "n_attacked": float(n)}
        metrics |= {"attack_success_rate_ci_low": interval.low, "attack_success_rate_ci_high": interval.high}
        return Record(run.run_id, run.name, "FINISHED", dict(run.tags), dict(run.params), metrics, frame(success))

    records = [
        record("pgd", "white_box", None, [1, 1, 1, 1, 0, 0]),
        record("hopskipjump", "decision_based", 100, [1, 0, 0, 0, 0, 0]),
        record("rays", "decision_based", 100, [0, 1, 1, 0, 0, 0]),
    ]
    table, gains = value_of_hiding(records)
    # the labels API's cell is the union (each attack's own figure: the strongest attacker's section)
    assert table[0][3:] == ["white_box", "decision_based union(hopskipjump,rays) @ 100"]
    assert table[1][4].startswith("0.500 [")  # examples 0, 1 and 2 of 6
    (step,) = gains[1:]
    assert step[4].startswith("union(hopskipjump,rays)") and step[5].startswith("+0.167 [")  # 4/6 - 3/6
    header, row = strongest_attacker(records)
    assert row[1] == "hopskipjump 0.167 [0.004, 0.641], rays 0.333 [0.043, 0.777]"
    assert row[2].startswith("union(hopskipjump,rays) 0.500 [") and row[3:] == ["6", "0", "20"]
    assert strongest_attacker(records[:2]) is None


def logged(experiment: str, attack: str, success: list[int], *, budget: int = 100, judge_key: str = "k1") -> str:
    """A FINISHED run with its per-example table, as the runner logs one."""
    n, hits = len(success), sum(success)
    interval = rate_interval(hits, n)
    mlflow.set_experiment(experiment)
    tags = {
        "threat_model": "decision_based",
        "attack": attack,
        "access.output": "label",
        "access.weights": "hidden",
        "judge": "cnn",
        "judge_key": judge_key,
        "dataset": "digits",
        "overrides": f"attack={attack} access.budget={budget}",
    }
    with mlflow.start_run(run_name=f"{attack}-b{budget}", tags=tags) as run:
        mlflow.log_params({"access.budget": budget, "seed": 0, "n_examples": n, "attack.eps": 0.1})
        mlflow.log_metrics(
            {"attack_success_rate": hits / n, "n_attacked": n}
            | {"attack_success_rate_ci_low": interval.low, "attack_success_rate_ci_high": interval.high}
        )
        rows = [",".join(PER_EXAMPLE_COLUMNS)]
        rows += [f"{i},0,0,{s},1,{s},10,{10 if s else -1},0.1,0.5" for i, s in enumerate(success)]
        mlflow.log_text("\n".join(rows) + "\n", "per_example.csv")
    return run.info.run_id


def gate(tmp_path, experiment: str, where: str, limit: float) -> tuple[int, list[dict]]:
    policy = tmp_path / "union.yaml"
    rule = f"  - {{where: {where}, metric: attack_success_rate, max: {limit}}}"
    policy.write_text(f"experiment: {experiment}\nthresholds:\n{rule}\n")
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    status = gate_command(["--policy", str(policy), "--out", str(out)])
    checks = json.loads((out / "summary.json").read_text())["checks"] if (out / "summary.json").exists() else []
    return status, checks


def test_the_gate_binds_on_the_union_by_default_and_on_one_attack_when_named(tmp_path, isolated_stores):
    name = f"union-gate-{uuid.uuid4().hex[:8]}"
    hopskipjump = logged(name, "hopskipjump", [1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    rays = logged(name, "rays", [0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    union_high = rate_interval(2, 10).high
    each_high = rate_interval(1, 10).high
    limit = (union_high + each_high) / 2  # each attack alone passes; the attacker running both does not

    for where in ("{threat_model: decision_based}", "{attack: union}"):
        status, (check,) = gate(tmp_path, name, where, limit)
        assert status == 1 and not check["passed"]
        assert check["value"] == pytest.approx(union_high) and set(check["run_id"].split("+")) == {hopskipjump, rays}
        assert check["run_name"].startswith("union(hopskipjump,rays) (decision_based, output label, budget 100")
    for run_id in (hopskipjump, rays):  # a union's verdict is each of its runs'
        assert mlflow.get_run(run_id).data.tags["gate.union"] == "fail"

    status, (check,) = gate(tmp_path, name, "{attack: rays}", limit)
    assert status == 0 and check["run_id"] == rays and check["value"] == pytest.approx(each_high)


def test_the_gate_refuses_a_union_of_runs_on_other_examples(tmp_path, isolated_stores, capsys):
    name = f"union-gate-{uuid.uuid4().hex[:8]}"
    logged(name, "hopskipjump", [1, 0, 0, 0])
    logged(name, "rays", [0, 1, 0, 0], judge_key="k2")
    status, _ = gate(tmp_path, name, "{threat_model: decision_based}", 0.9)
    assert status == 2
    err = capsys.readouterr().err
    assert "no union at decision_based" in err and "judge differs" in err and "where: {attack: NAME}" in err
    assert gate(tmp_path, name, "{attack: hopskipjump}", 0.9)[0] == 0  # one attack, named: checked on its own
