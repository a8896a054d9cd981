"""Unpaired labeling sessions for reward curves: one-sample ratings banded into good/bad labels, and the objectives fitted."""

import numpy as np

#----------------------------------------------------------------------------
# The curves a comparison of objectives draws (reward_curve --objectives), each with what it changes in FitOptions.
# bt fits the trial's pairwise judgements; the others fit the same rating session's good/bad labels, unpaired
# (rewards/losses.py): cs-bce is this repository's -D_CS + BCE, dreamcs DreamCS's MSE(reward, given score) +
# cs_lambda x -D_CS (the FitOptions' cs_lambda, 1 by default), dreamcs-l0 the paper's lambda = 0 ablation (the MSE alone).

OBJECTIVES = {
    'bt':           None,
    'cs-bce':       dict(objective='cs-bce'),
    'dreamcs':      dict(objective='dreamcs'),
    'dreamcs-l0':   dict(objective='dreamcs', cs_lambda=0.0),
}


def unpaired(objectives):
    """The unpaired ones among objective names, in their order."""
    return [o for o in objectives if OBJECTIVES[o] is not None]


def good_bad_pairs(labels, ids):
    """Every (good, bad) pair of `ids` under labels {id: 1 | 0}: what unpaired validation is scored on (as
    data.preferences.training_labels scores a good/bad split's validation and test)."""
    good = [x for x in ids if labels[x] == 1]
    return [(g, b) for g in good for b in ids if labels[b] == 0]

#----------------------------------------------------------------------------

class RatingTrial:
    """One unpaired labeling session: an annotator (data.annotators.OracleAnnotator) rates pool samples one at a time,
    each rating its standardised taste plus logistic noise (the oracle's given_scores, as annotate.py good-bad gives
    them). Ratings go round the pool in a fresh seeded order each pass, so a budget up to the pool's size rates distinct
    samples and a larger one rates each again (the sample's score is then the mean of its ratings). The labels are
    the oracle's good/bad bands (good_bad) over the samples rated: the middle band is rated, counted, and left out."""

    def __init__(self, oracle, pool, options, seed):
        self.oracle, self.pool, self.opts, self.seed = oracle, sorted(pool), options, int(seed)
        self.rng = np.random.RandomState([self.seed, 1])           # The order; the oracle's own rng draws the noise.
        self.order, self.ratings = [], []                          # Rated ids to come in this pass; (id, score) made.

    def rate(self, count):
        """Make `count` more ratings. One noise draw per rating, in rating order: the first N ratings of a seed are the
        same whatever budgets come after (a point of a curve is the same measured alone)."""
        for _ in range(count):
            if not self.order:
                self.order = [self.pool[i] for i in self.rng.permutation(len(self.pool))]
            sample_id = self.order.pop(0)
            self.ratings.append((sample_id, self.oracle.given_scores([sample_id])[sample_id]))

    def scores(self):
        """{rated id: mean of its ratings}."""
        sums = {}
        for sample_id, score in self.ratings:
            total, n = sums.get(sample_id, (0.0, 0))
            sums[sample_id] = total + score, n + 1
        return {k: total / n for k, (total, n) in sums.items()}

    def labels(self):
        """{id: 1 | 0} of the rated samples outside the middle band (bad at most the bad_quantile of their z, good at
        least the good_quantile), as the oracle's good_bad bands them."""
        return self.oracle.good_bad(list(self.scores()), self.opts.bad_quantile, self.opts.good_quantile,
            given=self.scores())

    def split(self):
        """(train dict(labels, scores: dreamcs's MSE targets, the mean given scores), validation (good, bad) pairs):
        val_share of the labelled samples held out for early stopping, seeded by the trial's seed and the count alone."""
        labels, scores = self.labels(), self.scores()
        ids = sorted(labels)
        order = np.random.RandomState([self.seed, len(self.ratings)]).permutation(len(ids))
        n_val = max(int(round(self.opts.val_share * len(ids))), 2)
        val, train = sorted(ids[i] for i in order[:n_val]), sorted(ids[i] for i in order[n_val:])
        return dict(labels={k: labels[k] for k in train}, scores={k: scores[k] for k in train}), \
            good_bad_pairs(labels, val)

    def agreement(self):
        """Share of the labels on the noise-free side: good with a z above the middle of the bands (the z quantile
        halfway between the two over the rated samples), bad with one below it."""
        labels = self.labels()
        if not labels:
            return float('nan')
        z = self.oracle.z
        middle = np.quantile([z[k] for k in self.scores()], (self.opts.bad_quantile + self.opts.good_quantile) / 2)
        return float(np.mean([(z[k] > middle) == bool(v) for k, v in labels.items()]))

    def counts(self):
        """{rated: distinct samples rated, labelled, good, ratings}."""
        labels = self.labels()
        return dict(rated=len(self.scores()), labelled=len(labels), good=int(sum(labels.values())),
            ratings=len(self.ratings))

#----------------------------------------------------------------------------
