"""Sanitisers: what each removes, counted exactly on hand-made pools (the removal metrics, the contributor cap,
provenance); the judge retrained on what it keeps; activation clustering and spectral signatures removing poison
at a higher rate than honest data on BadNets-poisoned judges, and agreeing with ART 1.20's detectors on the same
features; fine-tuning lowering the backdoor's success. Comparisons are tests on counts (Fisher's exact test,
McNemar's on the same examples), never a margin read off one machine's trained judge."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.paired import ALPHA, enough_to_compare, less_success
from helpers.poisoning import backdoor_run, paired, poisoned_judge
from scipy.stats import fisher_exact
from sklearn.cluster import KMeans
from torch import nn

from gavel.defenses.sanitise.activation_clustering import ActivationClustering
from gavel.defenses.sanitise.base import SanitiseContext, penultimate_features
from gavel.defenses.sanitise.contributor_cap import ContributorCap
from gavel.defenses.sanitise.provenance import Provenance
from gavel.defenses.sanitise.spectral_signatures import SpectralSignatures
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.training_stage import honest_examples, removal_metrics, train_judge
from gavel.targets.datasets import Pool
from gavel.targets.training import ModelSpec

BADNETS_5 = ("poison=badnets", "poison.fraction=0.05")


def hand_made(owners: list[int], seed: int = 0) -> SanitiseContext:
    """A pool of len(owners) examples whose i-th is contributed by owners[i]; no judge is read."""
    owners_array = np.asarray(owners, dtype=np.int64)
    n = len(owners_array)
    pool = Pool(np.zeros((n, 1, 2, 2), dtype=np.float32), np.arange(n, dtype=np.int64) % 2)
    return SanitiseContext(pool, owners_array, int(owners_array.max()) + 1, nn.Identity(), seed)


def test_removal_metrics_count_what_was_removed_against_what_was_poisoned():
    poisoned = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    kept = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1, 1], dtype=bool)
    assert removal_metrics(poisoned, kept) == {
        "removed_examples": 4.0,
        "poison_recall": 3 / 4,  # three of the four poisoned removed
        "poison_precision": 3 / 4,  # three of the four removed were poisoned
        "honest_removed_fraction": 1 / 6,  # one of the six honest examples lost
    }
    everything = removal_metrics(poisoned, np.zeros(10, dtype=bool))
    assert everything["poison_recall"] == 1.0 and everything["honest_removed_fraction"] == 1.0
    assert everything["poison_precision"] == 0.4


def test_honest_removed_counts_only_what_the_honest_contributors_gave():
    """The attacker's own clean examples (its contributors' unpoisoned ones) are not honest data: removing them costs
    no honest contributor anything."""
    poisoned = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    honest = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)  # the attacker gave the first four
    kept = np.array([0, 0, 0, 0, 0, 1, 1, 1], dtype=bool)
    metrics = removal_metrics(poisoned, kept, honest)
    assert metrics["honest_removed_fraction"] == 1 / 4  # one of the honest four; not the attacker's clean two
    assert metrics["poison_recall"] == 1.0 and metrics["poison_precision"] == 2 / 5


def test_removal_metrics_leave_out_a_figure_with_nothing_to_count():
    nothing_poisoned = removal_metrics(np.zeros(4, dtype=bool), np.array([0, 1, 1, 1], dtype=bool))
    assert nothing_poisoned == {"removed_examples": 1.0, "honest_removed_fraction": 0.25}
    nothing_removed = removal_metrics(np.array([1, 0, 0, 0], dtype=bool), np.ones(4, dtype=bool))
    assert nothing_removed == {"removed_examples": 0.0, "honest_removed_fraction": 0.0, "poison_recall": 0.0}
    all_poisoned = removal_metrics(np.ones(2, dtype=bool), np.array([0, 1], dtype=bool))
    assert all_poisoned == {"removed_examples": 1.0, "poison_recall": 0.5, "poison_precision": 1.0}


def test_the_contributor_cap_trims_each_contributor_over_it_to_exactly_its_share_and_no_one_else():
    """A pool of 100: contributors of 50, 30, 12 and 8 examples under a cap of 0.25 keep 25, 25, 12 and 8 (the
    over-cap ones a random 25 of theirs, drawn by the seed)."""
    owners = [0] * 50 + [1] * 30 + [2] * 12 + [3] * 8
    context = hand_made(owners)
    kept = ContributorCap(cap=0.25).clean(context).kept
    owners_array = np.asarray(owners)
    assert np.bincount(owners_array[kept]).tolist() == [25, 25, 12, 8]
    assert kept[owners_array >= 2].all()
    assert np.array_equal(ContributorCap(cap=0.25).clean(hand_made(owners)).kept, kept)
    assert not np.array_equal(ContributorCap(cap=0.25).clean(hand_made(owners, seed=1)).kept, kept)
    odd = ContributorCap(cap=0.333).clean(hand_made(owners)).kept  # floor(0.333 x 100) = 33
    assert np.bincount(owners_array[odd]).tolist() == [33, 30, 12, 8]
    assert ContributorCap(cap=1.0).clean(context).kept.all()


@pytest.mark.parametrize("detector", ["spectral_signatures", "activation_clustering"])
def test_provenance_drops_every_example_of_a_contributor_whose_flagged_share_passes_the_threshold(
    monkeypatch, detector
):
    """Contributor 0 has 3 of its 10 examples flagged (0.3), contributor 1 one of 10 (0.1, not past 0.1), 2 none:
    only contributor 0 loses anything, and it loses everything, its unflagged examples too."""
    owners = [0] * 10 + [1] * 10 + [2] * 10
    flags = np.zeros(30, dtype=bool)
    flags[[0, 4, 9, 15]] = True
    detectors = {"spectral_signatures": SpectralSignatures, "activation_clustering": ActivationClustering}
    monkeypatch.setattr(
        "gavel.defenses.sanitise.provenance.penultimate_features", lambda judge, x, device="cpu": np.zeros((30, 2))
    )
    monkeypatch.setattr(detectors[detector], "flagged", lambda self, *args: flags)
    kept = Provenance(detector=detector, threshold=0.1).clean(hand_made(owners)).kept
    assert np.array_equal(kept, np.asarray(owners) != 0)
    assert Provenance(detector=detector, threshold=0.3).clean(hand_made(owners)).kept.all()  # 0.3 does not pass 0.3


# -- on a BadNets-poisoned digits judge -------------------------------------------------------------------------------


def sanitiser(name: str, *overrides: str):
    return RunSettings.from_config(compose_config([f"sanitise={name}", *overrides])).sanitiser_instance


def context_for(poisoned) -> SanitiseContext:
    settings, data = poisoned.settings, poisoned.data
    return SanitiseContext(
        poisoned.contributed.pool, data.contributors, settings.data_instance.contributors, poisoned.judge,
        settings.seed,
    )  # fmt: skip


QUICK = ("target.train.epochs=5",)
"""What the exact accounting needs of a judge: any trained one (five epochs, a second to train)."""


def test_a_sanitiser_retrains_the_judge_on_exactly_what_it_kept_and_logs_what_it_removed():
    """Spectral signatures (deterministic) at 5% BadNets: the training stage's removal metrics are the sanitiser's
    own mask scored against the poison, and the judge it returns is keyed by the kept pool, its poison and its
    sanitiser."""
    poisoned = poisoned_judge(*BADNETS_5, *QUICK)
    settings = RunSettings.from_config(compose_config([*BADNETS_5, *QUICK, "sanitise=spectral_signatures"]))
    trained = train_judge(settings, poisoned.data, "cpu")
    kept = settings.sanitiser_instance.clean(context_for(poisoned)).kept
    honest = honest_examples(settings.poison_instance, poisoned.data, settings.data_instance.contributors)
    expected = removal_metrics(poisoned.contributed.poisoned, kept, honest)
    assert trained.metrics == {"poisoned_examples": 45.0, **expected}
    pool = poisoned.contributed.pool
    provenance = {**settings.poison_instance.as_dict(), **settings.sanitiser_instance.as_dict()}
    spec = ModelSpec.of(
        "judge", settings.target_instance.model, 0, Pool(pool.x[kept], pool.y[kept]), poisoned.data.input_shape, 10,
        provenance=provenance,
    )  # fmt: skip
    assert trained.judge.tags["judge_key"] == spec.key


def test_the_contributor_cap_through_the_training_stage_trims_the_attackers_big_share():
    """The attacker holds 3/12 of the pool (224 of 898) and poisons 5% of it; a cap of 0.2 leaves it floor(0.2 x
    898) = 179 and every honest contributor (74 or 75 each) all of theirs: 45 removed, all the attacker's."""
    contributors = ("data.contributors=10", "data.shares=[1,1,1,1,1,1,1,1,1,3]")
    settings = RunSettings.from_config(compose_config([*BADNETS_5, *QUICK, *contributors, "sanitise=contributor_cap"]))
    data = settings.data_instance.load()
    assert np.bincount(data.contributors).tolist() == [75] * 8 + [74, 224]
    metrics = train_judge(settings, data, "cpu").metrics
    assert metrics["removed_examples"] == 224 - 179
    poisoned = poisoned_judge(*BADNETS_5, *QUICK, *contributors)
    kept = settings.sanitiser_instance.clean(context_for(poisoned)).kept
    assert np.bincount(data.contributors[kept]).tolist() == [75] * 8 + [74, 179]
    honest = data.contributors < 9  # the attacker's is the last contributor
    assert metrics == {"poisoned_examples": 45.0, **removal_metrics(poisoned.contributed.poisoned, kept, honest)}
    assert metrics["honest_removed_fraction"] == 0.0  # the cap cost no honest contributor anything


@pytest.mark.slow
def test_activation_clustering_and_spectral_signatures_remove_poison_at_a_higher_rate_than_honest_data():
    """At their configured defaults, on judges poisoned with 5% BadNets at seeds 0-2 (45 poisoned of 898 each):
    the share of poisoned examples removed (poison_recall) is above the share of honest ones removed
    (honest_removed_fraction), by Fisher's exact test one-sided at ALPHA on the counts pooled over the seeds.

    Measured on the machine this was written on (recall / honest removed, seeds 0, 1, 2): activation clustering
    0.73/0.07, 0.31/0.15, 0.51/0.14; spectral signatures 0.20/0.06, 0.16/0.07, 0.20/0.06 (it removes 1.5 x 5% of
    every class, so at most 10 of the 45 poisoned, all in the target class, can go)."""
    judges = [poisoned_judge(*BADNETS_5, f"seed={seed}") for seed in (0, 1, 2)]
    for name in ("activation_clustering", "spectral_signatures"):
        counts = np.zeros((2, 2), dtype=int)
        said = []
        for poisoned in judges:
            removed = ~sanitiser(name).clean(context_for(poisoned)).kept
            marked = poisoned.contributed.poisoned
            counts += [[(removed & marked).sum(), (~removed & marked).sum()],
                       [(removed & ~marked).sum(), (~removed & ~marked).sum()]]  # fmt: skip
            said.append(f"{(removed & marked).sum()}/{marked.sum()} poisoned, "
                        f"{(removed & ~marked).sum()}/{(~marked).sum()} honest removed")  # fmt: skip
        p_value = fisher_exact(counts, alternative="greater").pvalue
        assert p_value < ALPHA, f"{name}: {'; '.join(said)}; p {p_value:.2g}"


# -- agreement with ART 1.20 ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def badnets_judge():
    poisoned = poisoned_judge(*BADNETS_5)
    features = penultimate_features(poisoned.judge, poisoned.contributed.pool.x)
    return poisoned, features


def art_classifier(poisoned):
    """ART's view of the judge for its poison detectors: they read the activations of the model's last registered
    child module, which on the judge itself is its logits (ART 1.20.1 warns "Size: 10"); on the judge's trunk (its
    last Linear layer made the identity) it is the penultimate features gavel's sanitisers read."""
    from gavel.attacks.adapters.art import pytorch_estimator
    from gavel.defenses.detection.encoders import penultimate_encoder

    data = poisoned.data
    return pytorch_estimator(penultimate_encoder(poisoned.judge).net, data.input_shape, data.n_classes, "cpu")


def test_art_pointed_at_the_judges_trunk_reads_the_features_our_sanitisers_read(badnets_judge):
    from art.defences.detector.poison import ActivationDefence

    poisoned, features = badnets_judge
    pool = poisoned.contributed.pool
    arts = ActivationDefence(art_classifier(poisoned), pool.x, pool.y)._get_activations()
    assert arts.shape == features.shape == (len(pool), 128)
    np.testing.assert_allclose(arts, features, rtol=0, atol=1e-4)


def test_activation_clustering_is_arts_with_seeded_restarts(badnets_judge, monkeypatch):
    """ART's ActivationDefence (PCA to 10 dimensions, 2-means per class, the smaller cluster flagged: our
    analysis=smaller) on the same features flags exactly our examples, once its k-means gets our 10 seeded
    restarts: ART starts one k-means unseeded, whose split of a class moves from run to run (on the machine this
    was written on its poison recall ranged 0.27-0.78 over ten runs on one judge, ours 0.73)."""
    import art.defences.detector.poison.activation_defence as art_ac
    from art.defences.detector.poison import ActivationDefence

    poisoned, features = badnets_judge
    pool, seed = poisoned.contributed.pool, poisoned.settings.seed
    monkeypatch.setattr(art_ac, "KMeans", lambda n_clusters: KMeans(n_clusters, n_init=10, random_state=seed))
    defence = ActivationDefence(art_classifier(poisoned), pool.x, pool.y)
    defence.activations_by_class = defence._segment_by_class(features, pool.y)
    _, clean = defence.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis="smaller")
    theirs = np.asarray(clean) == 0
    ours = ActivationClustering(dims=10, analysis="smaller").flagged(features, pool.y, seed)
    assert np.array_equal(theirs, ours), f"{(theirs != ours).sum()} of {len(ours)} examples flagged differently"


def test_spectral_signatures_score_as_arts_routine_does_on_centred_features(badnets_judge):
    """Tran et al.'s outlier score, the projection of each example's centred features on their top singular
    vector: ART's `spectral_signature_scores` on each class's centred features ranks the examples as ours does, and
    the top multiplier x expected_fraction of each class are exactly the ones we flag. (ART's defence itself
    projects the features uncentred, unlike the paper's Algorithm 1: outside the poisoned class it flags other
    examples than ours, about half of them on the machine this was written on.)"""
    from art.defences.detector.poison import SpectralSignatureDefense

    poisoned, features = badnets_judge
    y = poisoned.contributed.pool.y
    ours = SpectralSignatures(expected_fraction=0.05, multiplier=1.5)
    theirs = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        centred = features[rows] - features[rows].mean(axis=0)
        scores = SpectralSignatureDefense.spectral_signature_scores(centred)[:, 0]
        theirs[rows[np.argsort(-scores, kind="stable")[: int(np.floor(1.5 * 0.05 * len(rows)))]]] = True
    assert np.array_equal(theirs, ours.flagged(features, y))


# -- fine-tuning ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fine_tuning_on_clean_held_out_data_lowers_the_backdoors_success():
    """BackdoorBench's shape: the judge poisoned with 5% BadNets, fine-tuned for 10 epochs on the operator's 160
    clean held-out examples, opens to the trigger on significantly fewer of the same examples (McNemar's test).
    Measured on the machine this was written on: 0.95 -> 0.37 (seed 0)."""
    plain = backdoor_run(*BADNETS_5)
    tuned = backdoor_run(*BADNETS_5, "sanitise=fine_tune")
    after, before = paired(tuned, plain)
    enough_to_compare(after, before)
    less_success(after, before)
    assert tuned["clean_accuracy"] >= plain["clean_accuracy"] - 0.05
