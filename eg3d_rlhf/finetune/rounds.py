"""Online rounds: draw from the current generator, label the pairs the reward is least sure of, refit, tune again."""

import itertools
import json
import math
import os
import shutil

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import collateral, report_plots, reward_fit
from eg3d_rlhf.analysis.evaluation import win_rate
from eg3d_rlhf.data import annotators, people_round, preferences
from eg3d_rlhf.data.bank import BANK_FILE, Bank
from eg3d_rlhf.data.labeling import informative_pairs, pair_key, random_pairs
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.finetune.overopt_sweep import TOOL, TRAIN_PY, child
from eg3d_rlhf.generators import registry
from eg3d_rlhf.generators.base import seed_ranges
from eg3d_rlhf.geometry.sigma import slab_grid
from torch_utils import safetensors_file

#----------------------------------------------------------------------------
# Round k lives in round-k/ of the run folder. Its steps run in order, each skipped when its output exists, and each
# output is written whole (a folder renamed into place, a file written atomically), so a run stopped anywhere goes on
# where it stopped:
#   bank    tools/sample_bank.py: `bank_size` new seeds drawn by the current generator (the start's in round 0)
#   pairs   `judgements` pairs of that bank: a `random_share` of them at random (calibration), the rest in decreasing
#           expected information under the previous round's reward ensemble (labeling.informative_pairs); round 0,
#           with no reward yet, draws them all at random. A flow generator's pairs join two samples of one condition
#           (Flow-DPO compares them under it)
#   labels  the simulated annotator's judgements of them. Its taste is standardised over round 0's bank in every
#           round, so one unit of noise means the same in each. With people, the pairs page serves them (and spares,
#           for pairs everyone skips) to whoever is invited until the round's count is judged (people_round.py);
#           their answers land in people.jsonl as they come, so a stopped run serves only what is left. Beside them:
#           the previous reward's accuracy on them before it is refitted, which says how far the generator moved
#           off what was labelled
#   reward  tools/train_reward.py on every round's labels so far (with `window`: the last `window` rounds'), over a
#           bank linking those rounds' samples
#   tune    from the current generator with that reward: EG3D by train.py's reward phase, `kimg` long, its last
#           snapshot the next generator; a flow by Circular-DPO (group a) with every label so far as step 1's data and
#           that reward ranking step 2's candidates, its flow-a snapshot the next generator. An EG3D run with a known
#           gold taste scores it on the training panel each tick: the proxy-vs-gold curve of the round (proxy_gold())
#   check   with `check` > 0: that many new seeds drawn by the generator the round started from and by the one it
#           tuned, each seed's two samples a pair (sides under neutral ids, x or y at random), judged by the annotator
#           like the round's pairs and counted in its `judgements`; the round's verdict is the tuned one's win rate.
#           With `keep_better`, a round whose tuned generator does not win more of them than it loses hands on the
#           generator it started from. Later rounds refit on these judgements too. Beside them: how the reward the
#           round tuned on ranks the same pairs (check-reward.json), which says whether the tuning exploited it
#   gold    the taste (`gold_taste`, else the simulated annotator's), noise-free, on held-out `eval_seeds` drawn by the
#           start and by this round's generator: the win rate of this round's (exact binomial p, Wilson interval), its
#           mean gain in sd of the start, and its win rate against the previous round's generator. People with no
#           gold taste have none: a blind study of the rounds' generators measures theirs (tools/gold_studies.py)
#   collateral  what else this round's generator changed on the same held-out samples against the start: every taste
#           at temperature 0, the mesh statistics, the true geometry, dents and plausibility (analysis/collateral.py,
#           as tools/evaluate.py reports them)
# rounds.json and rounds.md put the rounds side by side.

ROUND = 'round-{}'
PEOPLE = 'people'               # Annotators who label through the page: 'people' (invited) or 'people:NAME' (loopback).
SPLIT, SPLIT_TRIES = (0.7, 0.15, 0.15), 20  # train_reward's default split shares; split seeds split_seed() tries.
INVITES = 'people'              # The run's invites: OUTDIR/people.invites.json (label.py invite NAME --out OUTDIR/people).
CHECK_SEED = 40000              # First seed of round 0's check; round k's are the `check` seeds after round k-1's.
# Settings added since the first runs, with the values those runs had.
ADDED = dict(check=0, keep_better=False, window=0)


def people_name(annotator):
    """(True, NAME or None) for 'people' / 'people:NAME', (False, None) for a simulated annotator."""
    kind, _, name = annotator.partition(':')
    return (True, name or None) if kind == PEOPLE else (False, None)


def settle(path, make):
    """make(tmp) writes a folder at tmp; it is renamed to path once whole. A tmp left by a stopped run is its own
    unfinished output and is removed first."""
    if os.path.isdir(path):
        return path
    tmp = path + '.partial'
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    make(tmp)
    os.replace(tmp, path)
    return path


def write_json(path, value):
    """value (nan and inf as null) as JSON at path, atomically; returns what was written."""
    value = dnnlib.util.json_safe(value)
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        json.dump(value, f, indent=1)
    return value


def read_json(path):
    """A file of this run's own (write_json's): a JSON object whose numbers are all finite (nan and inf as null)."""
    value = dnnlib.util.read_json_object(path, error=RunError)
    todo = [value]
    while todo:                                         # A walk without recursion: any depth json.loads took.
        item = todo.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise RunError(f'{path}: holds nan or inf where this tool writes finite numbers; delete it and run again '
                'to redo that step')
        todo.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
    return value


def damaged(path, what):
    """The one-line error of a run file that does not hold what this run wrote there."""
    return RunError(f'{path}: not {what} as this tool writes it; delete it and run again to redo that step')


class Rounds:
    """One run of online rounds in `outdir` (settings: the tool's options, kept in settings.json)."""

    def __init__(self, outdir, settings, page=None, nproc=1, drawn=None):
        self.outdir, self.s = outdir, dict(settings)
        # The bank, the refit and a flow's fine-tuning run as nproc processes under torchrun (not a setting: a bank's
        # bits do not depend on it, so a run may resume with another count).
        self.launch = [] if nproc == 1 else ['-m', 'torch.distributed.run', '--standalone', f'--nproc-per-node={nproc}']
        self.people, self.person = people_name(self.s['annotator'])
        self.taste = None if self.people else annotators.parse_annotator(self.s['annotator'])
        gold = self.s.get('gold_taste')
        self.gold_taste = annotators.parse_annotator(gold) if gold else self.taste
        self.page = dict(page or {})                    # serve_round's host, port, invites, allow_hosts, progress.
        self.scored = {}                                # (round, reward path): member_scores' answer.
        # held_out()'s answers (the start's and the last network's), by network and draw; a dict `drawn` shared with
        # other runs of one start (label_efficiency's arms) draws the start's held-out samples once for all of them.
        self.drawn = {} if drawn is None else drawn
        self.flow = registry.family_of_file(self.s['network']).name == 'flow'
        self.ext = '.pkl' if not self.flow else '.safetensors' if safetensors_file.is_safetensors(self.s['network']) \
            else '.pt'                                  # A flow's generators keep the start's format.

    def folder(self, k, *names):
        return os.path.join(self.outdir, ROUND.format(k), *names)

    def generator(self, k):
        """The generator round k draws from and tunes: the start, or the one round k-1 handed on."""
        return self.s['network'] if k == 0 else self.result(k - 1)

    def result(self, k):
        """The generator round k hands on: the one it tuned, or the one it started from when its check kept that."""
        check = self.check(k)
        return self.generator(k) if check is not None and check['kept'] == 'previous' else self.tune(k)

    def seeds(self, k):
        first = self.s['bank_seed'] + k * self.s['bank_size']
        return f'{first}-{first + self.s["bank_size"] - 1}'

    def bank(self, k):
        os.makedirs(self.folder(k), exist_ok=True)
        return settle(self.folder(k, 'bank'), lambda tmp: child([*self.launch, TOOL('sample_bank'), '--network',
            self.generator(k), '--trust-pickle', '--seeds', self.seeds(k), '--res', str(self.s['res']),
            '--outdir', tmp], self.folder(k, 'bank.log')))

    def taste_scores(self, k, bank=None, name='taste.json'):
        """{id: raw taste score} of round k's bank (or another of its banks) under the simulated annotator's taste,
        kept in the round's `name`."""
        path = self.folder(k, name)
        bank = Bank(bank or self.bank(k))
        if not os.path.isfile(path):
            write_json(path, annotators.taste_scores(self.taste, bank))
        scores = read_json(path)
        if sorted(scores) != sorted(bank.ids) or not all(isinstance(v, (int, float)) and np.isfinite(v)
                for v in scores.values()):
            raise damaged(path, f'a finite taste score for each sample of {bank.root}')
        return {str(i): float(v) for i, v in scores.items()}

    def annotator(self, k, scores=None, seed=0):
        """The simulated annotator of round k: its taste on round k's bank (or on `scores`), standardised as over
        round 0's."""
        reference = np.array(list(self.taste_scores(0).values()))
        return annotators.OracleAnnotator(self.taste, scores or self.taste_scores(k), temperature=self.s['temperature'],
            seed=self.s['seed'] * 1000 + k + seed, standard=(reference.mean(), reference.std()))

    def member_scores(self, k, reward_path, bank=None):
        """{id: [K] member rewards} of round k's bank (or another bank) under a reward checkpoint (scored once per run:
        the pairs and the drift both read them)."""
        key = (bank or self.bank(k), reward_path)
        if key not in self.scored:
            from eg3d_rlhf.rewards.checkpoint import load_reward # pylint: disable=import-outside-toplevel
            bank, reward = Bank(key[0]), load_reward(reward_path)
            scores = reward.score_slabs((bank.slab(i) for i in bank.ids), members=True, names=bank.ids)
            scores = np.asarray(scores, dtype=np.float64).reshape(len(bank.ids), -1)
            self.scored[key] = dict(zip(bank.ids, scores))
        return self.scored[key]

    def pairs(self, k):
        """Round k's pairs [(a, b)] and how many of the first are active ones; chosen once, kept in pairs.json."""
        path = self.folder(k, 'pairs.json')
        ids, n = Bank(self.bank(k)).ids, self.s['judgements'] - self.s.get('check', 0)     # The check counts in it.
        if os.path.isfile(path):
            kept = read_json(path)
            pairs = kept.get('pairs')
            if not isinstance(pairs, list) or not isinstance(kept.get('active'), int) or not all(isinstance(p, list)
                    and len(p) == 2 and p[0] != p[1] and set(p) <= set(ids) for p in pairs):
                raise damaged(path, f'pairs of two different samples of round {k}\'s bank')
            return [tuple(p) for p in pairs], kept['active']
        rng = np.random.RandomState(self.s['seed'] * 1000 + k)
        active = 0 if k == 0 else int(round(n * (1 - self.s['random_share'])))
        chosen, alike = [], self.alike(k)
        if active:
            members = self.member_scores(k, self.folder(k - 1, 'reward.safetensors'))
            chosen += itertools.islice(filter(alike, informative_pairs(members, rng)), active)
        taken = {pair_key(*p) for p in chosen}                          # The calibration share, none twice.
        chosen += itertools.islice(filter(alike, random_pairs(ids, rng, skip=taken)), n - len(chosen))
        if len(chosen) < n:
            raise RunError(f'round {k}\'s bank has {len(chosen)} pairs of two samples of one condition, not '
                f'{n}: raise --bank-size or lower --judgements')
        write_json(path, dict(pairs=chosen, active=active))
        return [tuple(p) for p in chosen], active

    def labels(self, k):
        """Round k's judgements file, and the previous reward's accuracy on them before its refit (drift.json)."""
        path = self.folder(k, 'labels.jsonl')
        if not os.path.isfile(path) and self.people:
            pairs = self.pairs(k)[0]
            self.ask_people(people_round.PairPool(self.folder(k, 'people.jsonl'), pairs + self.spares(k), len(pairs)),
                self.bank(k), path)
        elif not os.path.isfile(path):
            oracle = self.annotator(k)
            preferences.write_judgements(path, oracle.judgements(self.pairs(k)[0]))
        drift = self.folder(k, 'drift.json')
        if k and not os.path.isfile(drift):
            members = self.member_scores(k, self.folder(k - 1, 'reward.safetensors'))
            mean = {i: float(np.mean(v)) for i, v in members.items()}
            pairs, count = self.pairs(k)
            active = {pair_key(*p) for p in pairs[:count]}
            judged = [j for j in preferences.load_judgements(path) if j.choice in ('a', 'b')]
            # All pairs; the random share alone (how far the generator moved off the labels, unbiased by the choice
            # of pairs); the active pairs alone (chosen where the members disagree, so harder by construction).
            write_json(drift, dict(**accuracy(mean, judged), random=accuracy(mean, [j for j in judged if
                pair_key(j.a, j.b) not in active]), active=accuracy(mean, [j for j in judged if pair_key(j.a, j.b)
                in active])))
        return path

    def ask_people(self, pool, bank, path):
        """Serve the pool's pairs of `bank` on the page until judged, then write them to `path`."""
        page = dict(self.page)
        if isinstance(page.get('progress'), people_round.Progress):
            page['progress'] = people_round.Progress(pool.count)
        people_round.serve_round(pool, Bank(bank), annotator=self.person, **page)
        people_round.write_labels(pool, path)

    def check_bank(self, k):
        """Round k's check samples in one bank: `check` seeds (a flow's: enough seeds for `check` pairs under its
        conditions) drawn by the generator it started from and by the one it tuned, under ids rKx-ID and rKy-ID whose
        side (x or y) is drawn at random per sample (sides.json)."""
        conditions = registry.family_of_file(self.s['network']).conditions(self.s['network']) or 1
        first, count = CHECK_SEED + k * self.s['check'], -(-self.s['check'] // conditions)

        def make(tmp):
            os.makedirs(tmp)
            for side, network in (('previous', self.generator(k)), ('tuned', self.tune(k))):
                child([*self.launch, TOOL('sample_bank'), '--network', network, '--trust-pickle', '--seeds',
                    f'{first}-{first + count - 1}', '--res', str(self.s['res']), '--outdir',
                    os.path.join(tmp, side)], self.folder(k, f'check-{side}.log'))
            sides = self.sides(k, Bank(os.path.join(tmp, 'previous')).ids)
            for name, side in sides.items():
                os.symlink(os.path.join(side, name[len(f'r{k}x-'):]), os.path.join(tmp, name))
            shutil.copy(os.path.join(tmp, 'previous', BANK_FILE), os.path.join(tmp, BANK_FILE))
            write_json(os.path.join(tmp, 'sides.json'), sides)
        return settle(self.folder(k, 'check'), make)

    def sides(self, k, ids):
        """{rKx-ID or rKy-ID: 'previous' or 'tuned'} of round k's check samples `ids`, x drawn at random per sample.
        Its own stream (an array seed): a simulated annotator's noise, seeded by a number, must not follow it."""
        rng, sides = np.random.RandomState([self.s['seed'], k, 1]), {}
        for i, flip in zip(ids, rng.rand(len(ids)) < 0.5):
            sides.update({f'r{k}{"yx"[int(flip)]}-{i}': 'previous', f'r{k}{"xy"[int(flip)]}-{i}': 'tuned'})
        return sides

    def check_labels(self, k):
        """Round k's judgements of its check pairs (check.jsonl): each sample's x side against its y side."""
        path, bank = self.folder(k, 'check.jsonl'), self.check_bank(k)
        ids = Bank(bank).ids
        pairs = check_pairs(ids, k, self.s['check'])
        if os.path.isfile(path):
            return path
        if self.people:
            spares = check_spares(ids, k, pairs, np.random.RandomState(self.s['seed'] * 1000 + k + 900))
            self.ask_people(people_round.PairPool(self.folder(k, 'check.people.jsonl'), pairs + spares, len(pairs)),
                bank, path)
        else:
            scores = self.taste_scores(k, bank, 'check.taste.json')
            preferences.write_judgements(path, self.annotator(k, scores, seed=700).judgements(pairs))
        return path

    def check(self, k):
        """Round k's verdict on its same-seed pairs (check.json), or None without a check: the tuned generator's win
        rate against the one the round started from (and the noise-free one where the annotator is simulated), and
        which of the two the round hands on."""
        if not self.s.get('check'):
            return None
        path = self.folder(k, 'check.json')
        if os.path.isfile(path):
            found = read_json(path)
            if found.get('kept') not in ('tuned', 'previous') or not all(isinstance(found.get(part), dict) and all(
                    type(found[part].get(n)) is int for n in ('wins', 'losses', 'ties')) for part in ('labels', *[
                    'truth'] * (found.get('truth') is not None))) or 'truth' not in found:
                raise damaged(path, 'the check of this round')
            return found
        bank, labelled = self.check_bank(k), self.check_labels(k)
        sides = read_json(os.path.join(bank, 'sides.json'))
        if sorted(sides) != Bank(bank).ids or not set(sides.values()) <= {'previous', 'tuned'}:
            raise damaged(os.path.join(bank, 'sides.json'), 'the side of each sample of the check')
        judged = preferences.load_judgements(labelled)
        if not all(j.a in sides and j.b in sides for j in judged):
            raise damaged(labelled, 'judgements of the check\'s pairs')
        verdict = lambda choice, j: 'tie' if choice not in ('a', 'b') else \
            {'tuned': 'tuned', 'previous': 'original'}[sides[j.a if choice == 'a' else j.b]]
        labels = win_rate([verdict(j.choice, j) for j in judged if j.choice != 'skip'])
        truth = win_rate([verdict(j.extra['noise_free'], j) for j in judged]) if judged and all(
            'noise_free' in j.extra for j in judged) else None
        kept = 'previous' if self.s.get('keep_better') and labels['wins'] <= labels['losses'] else 'tuned'
        return write_json(path, dict(labels=labels, truth=truth, kept=kept))

    def check_reward(self, k):
        """How the reward round k tuned on saw its check pairs, before a refit learns from them (check-reward.json):
        the share where it scored the tuned sample higher, and its accuracy against the labels (and the noise-free
        choices). Where it prefers the tuned side and the annotator does not, tuning exploited it. None without a
        check."""
        if not self.s.get('check'):
            return None
        path = self.folder(k, 'check-reward.json')
        if os.path.isfile(path):
            found = read_json(path)
            share = found.get('prefers_tuned')
            if not accuracy_is_whole(found) or not (share is None or type(share) in (int, float) and 0 <= share <= 1):
                raise damaged(path, 'the reward\'s view of the check pairs')
            return found
        self.check(k)                                   # Its sides and labels, checked.
        bank = self.check_bank(k)
        sides = read_json(os.path.join(bank, 'sides.json'))
        mean = {i: float(np.mean(v)) for i, v in self.member_scores(k, self.reward(k), bank).items()}
        judged = preferences.load_judgements(self.check_labels(k))
        tuned = [mean[j.a] > mean[j.b] if sides[j.a] == 'tuned' else mean[j.b] > mean[j.a] for j in judged]
        return write_json(path, dict(**accuracy(mean, [j for j in judged if j.choice in ('a', 'b')]),
            prefers_tuned=float(np.mean(tuned)) if tuned else None))

    def spares(self, k):
        """Round k's spare pairs for people: as many again as it asks about, at random, none of its pairs."""
        pairs, ids = self.pairs(k)[0], Bank(self.bank(k)).ids
        rng = np.random.RandomState(self.s['seed'] * 1000 + k + 500)
        spares = filter(self.alike(k), random_pairs(ids, rng, skip={pair_key(*p) for p in pairs}))
        return list(itertools.islice(spares, len(pairs)))

    def alike(self, k):
        """Whether a pair of round k's samples may be asked about: both of one condition (EG3D's have none)."""
        bank = Bank(self.bank(k))
        condition = {i: bank.meta(i).get('condition') for i in bank.ids}
        return lambda pair: condition[pair[0]] == condition[pair[1]]

    def union(self, k):
        """A bank linking the samples of rounds 0..k and of the checks before round k (their seeds or prefixes
        differ, so their ids do) and all their labels; with a `window`, of its last `window` rounds only."""
        folder = self.folder(k, 'labelled')
        first = max(0, k + 1 - self.s['window']) if self.s.get('window') else 0
        parts = [(self.bank, self.labels, r) for r in range(first, k + 1)]
        parts += [(self.check_bank, self.check_labels, r) for r in range(first, k) if self.s.get('check')]

        def make(tmp):
            os.makedirs(tmp)
            shutil.copy(os.path.join(self.bank(0), BANK_FILE), os.path.join(tmp, BANK_FILE))
            with open(os.path.join(tmp, 'labels.jsonl'), 'w', encoding='utf-8') as out:
                for bank, labels, r in parts:
                    bank = Bank(bank(r))
                    for i in bank.ids:
                        os.symlink(os.path.abspath(os.path.join(bank.root, i)), os.path.join(tmp, i))
                    with open(labels(r), encoding='utf-8') as f:
                        out.write(f.read())
        return settle(folder, make)

    def reward(self, k):
        path = self.folder(k, 'reward.safetensors')
        if not reward_fit.finished(path):              # A fit stopped part-way: its files are this run's own.
            union = self.union(k)
            child([*self.launch, TOOL('train_reward'), '--bank', union, '--labels', os.path.join(union, 'labels.jsonl'),
                '--split', ','.join(map(str, SPLIT)), '--split-seed', str(split_seed(union)), '--reward', 'sigma',
                '--out', path, '--force', *(['--refit-all'] if self.s['refit_all'] else [])],
                self.folder(k, 'reward.log'))
        return path

    def tune(self, k):
        path = self.folder(k, 'generator' + self.ext)
        if not os.path.isfile(path):
            reward, runs = self.reward(k), self.folder(k, 'train')
            if os.path.isdir(runs):                     # A stopped fine-tuning starts again from the round's start.
                shutil.rmtree(runs)
            scale = self.s.get('tune_scale', 1)         # label_efficiency's upfront run tunes as long as all rounds.
            common = [f'--resume={self.generator(k)}', f'--reward-model={reward}', f'--seed={self.s["seed"]}',
                f'--outdir={runs}', *self.s['train_args']]
            if self.flow:
                union = self.union(k)
                child([*self.launch, TRAIN_PY, '--generator=flow', '--method=circular-dpo', f'--bank={union}',
                    f'--labels={os.path.join(union, "labels.jsonl")}', '--eval-seeds=none', '--report-to=none', *common,
                    *([f'--dpo-steps={scale * dpo_steps(self.s["train_args"])}'] if scale != 1 else [])],
                    self.folder(k, 'train.log'))
                run = os.path.join(runs, sorted(os.listdir(runs))[-1])
                shutil.copyfile(os.path.join(run, 'flow-a' + self.ext), path + '.partial')
                os.replace(path + '.partial', path)
                return path
            # float32 on every CPU: a comparison adds training seeds in later sessions, maybe on another machine.
            # A known gold taste is scored on the panel each tick (proxy_gold(); no training step reads it, so the
            # weights are as without it); train_args may name another or turn the panel off.
            panel = flag_value(self.s['train_args'], '--panel-seeds', '').strip().lower() != 'none'  # As train.py.
            gold = [f'--gold-taste={self.gold_taste}'] if self.gold_taste and panel else []
            child([TRAIN_PY, '--trust-pickle', '--reward=sigma', f'--lambda-r={self.s["lambda_r"]:g}',
                f'--kimg={scale * self.s["kimg"]:g}', '--collateral-seeds=0', '--cpu-bf16=off', *gold, *common],
                self.folder(k, 'train.log'))
            run = os.path.join(runs, sorted(os.listdir(runs))[-1])
            snapshot = sorted(f for f in os.listdir(run) if f.startswith('network-snapshot-'))[-1]
            from training import legacy # pylint: disable=import-outside-toplevel  (our own snapshot: trusted)
            data = legacy.load_network_pkl(os.path.join(run, snapshot), trust=True)
            # The networks alone: the next round starts afresh from them, with its own reward, panel and optimizer.
            legacy.save_network_pkl(path, {name: data[name] for name in ('G', 'D', 'G_ema', 'training_set_kwargs')})
        return path

    def proxy_gold(self, k):
        """Round k's proxy and gold along its EG3D fine-tuning, from the panel's rows in its run's reward_report.json:
        kimg, the proxy's gain (its reward, in sd of the round's start over the panel), the gold taste's panel mean
        at each tick and its start's sd (None where the run scored no gold). None for a flow or a run with no panel."""
        runs = self.folder(k, 'train')
        if self.flow or not os.path.isdir(runs) or not os.listdir(runs):
            return None
        path = os.path.join(runs, sorted(os.listdir(runs))[-1], 'reward_report.json')
        if not os.path.isfile(path):
            return None
        curves = dnnlib.util.read_json_object(path, error=RunError).get('proxy_gold')
        if curves is None:
            return None
        what = 'a fine-tuning report with the panel\'s proxy and gold rows'
        rows = curves.get('rows') if isinstance(curves, dict) else None
        if not isinstance(rows, dict):
            raise damaged(path, what)
        number = lambda v: type(v) in (int, float) and math.isfinite(v)
        kimg, gain, gold = rows.get('kimg'), curves.get('proxy_gain'), rows.get('gold')
        scale = rows['scale'].get('gold') if isinstance(rows.get('scale'), dict) else None
        if not (isinstance(kimg, list) and kimg and isinstance(gain, list) and isinstance(gold, list) and len(kimg) ==
                len(gain) == len(gold) and all(map(number, kimg + gain)) and all(g is None or number(g) for g in gold)
                and (scale is None or number(scale))):
            raise damaged(path, what)
        scored = all(g is not None for g in gold) and scale is not None
        return dict(kimg=kimg, proxy_gain=gain, gold=gold if scored else None, gold_scale=scale if scored else None)

    def held_out(self, network):
        """(generator, grid, ids, raw sigma slabs [N, *grid]) of `network` on the held-out eval seeds (a flow's: the
        seeds under each condition in turn); the start's and the last network's are kept."""
        key = lambda n: (n, self.s['res'], self.s['eval_seeds'])
        if key(network) not in self.drawn:
            G = registry.family_of_file(network).load(network, 'cpu')      # The tool checked the start's trust.
            grid, seeds = slab_grid(self.s['res'], cube_length=G.cube_length), seed_ranges(self.s['eval_seeds'])
            conditions = sorted({c for _, c in G.keys(seeds)}, key=lambda c: -1 if c is None else c)
            slabs = np.concatenate([G.sigma_grid(seeds, grid, c).numpy() for c in conditions])
            for old in [k for k in self.drawn if k != key(self.s['network'])]:
                del self.drawn[old]
            self.drawn[key(network)] = G, grid, [G.sample_id(seed, c) for c in conditions for seed in seeds], slabs
        return self.drawn[key(network)]

    def gold(self, k):
        """The taste on the held-out seeds: the generator round k hands on against the start (kept in gold.json);
        when its check kept the previous one, also the gain the tuned one would have had (`rejected_gain_sd`)."""
        path = self.folder(k, 'gold.json')
        if self.gold_taste is None:
            return None
        if os.path.isfile(path):
            return read_json(path)
        taste, scores = annotators.taste_function(self.gold_taste), {}
        tuned, kept = self.tune(k), self.result(k)      # The rejected one first: the kept one is drawn last, kept.
        for name, network in [('start', self.s['network']), *[('rejected', tuned)] * (tuned != kept), ('tuned', kept)]:
            _, grid, ids, slabs = self.held_out(network)
            scores[name] = np.array([taste(s, grid, 10.0) for s in slabs])
        versus = lambda other: ['tuned' if t > o else 'original' if t < o else 'tie'
            for o, t in zip(other, scores['tuned'])]
        previous = None if k == 0 else np.array(self.gold(k - 1)['scores'])
        sd = scores['start'].std() or 1.0
        gain = lambda name: float((scores[name] - scores['start']).mean() / sd) if name in scores else None
        return write_json(path, dict(seeds=len(scores['tuned']), **win_rate(versus(scores['start'])),
            gain_sd=gain('tuned'), rejected_gain_sd=gain('rejected'),
            versus_previous=None if previous is None else win_rate(versus(previous)), ids=ids,
            scores=scores['tuned'].tolist()))

    def collateral(self, k):
        """What else round k's generator changed on the held-out seeds against the start (kept in collateral.json):
        collateral.compare() of every taste at temperature 0, with dents and plausibility."""
        path = self.folder(k, 'collateral.json')
        if os.path.isfile(path):
            found = read_json(path)
            if not isinstance(found.get('tastes'), dict):
                raise damaged(path, 'the collateral of this round')
            return found
        G, grid, _, before = self.held_out(self.s['network'])
        after = self.held_out(self.result(k))[3]
        return write_json(path, collateral.report(before, after, grid, G,
            trained=self.taste if self.taste in annotators.TASTES else None))

    def run(self, progress=None):
        """Every round in order (each step skipped when done); returns the summary written to rounds.json."""
        rows = []
        for k in range(self.s['rounds']):
            self.labels(k)
            self.tune(k)
            check, check_reward = self.check(k), self.check_reward(k)
            gold = self.gold(k)
            drift = read_json(self.folder(k, 'drift.json')) if k else None
            if gold is not None and (not isinstance(gold.get('gain_sd'), (int, float)) or not isinstance(
                    gold.get('wilson95'), list) or not isinstance(gold.get('scores'), list) or
                    len(gold['scores']) != gold.get('seeds')):
                raise damaged(self.folder(k, 'gold.json'), 'the gold of this round')
            if drift is not None and not drift_is_whole(drift):
                raise damaged(self.folder(k, 'drift.json'), 'the accuracy before the refit')
            fit = dnnlib.util.read_json_object(self.folder(k, 'reward.report.json'), error=RunError)  # train_reward's.
            rows.append(dict(round=k, judgements=(k + 1) * self.s['judgements'],
                active=self.pairs(k)[1], before_refit=drift,
                reward_held_out=fit.get('held_out'), gold=gold, check=check, check_reward=check_reward,
                proxy_gold=self.proxy_gold(k), collateral=collateral.summary_line(self.collateral(k))))
            if progress is not None:
                progress(rows[-1])
        summary = write_json(os.path.join(self.outdir, 'rounds.json'), dict(settings=self.s, rounds=rows))
        plot(summary, os.path.join(self.outdir, 'rounds.png'))
        plot_proxy_gold(summary, os.path.join(self.outdir, 'rounds-proxy-gold.png'), self.gold_taste)
        with dnnlib.util.atomic_write(os.path.join(self.outdir, 'rounds.md'), 'w', encoding='utf-8') as f:
            f.write(describe(summary))                  # A label-efficiency arm's folder gets its table too.
        return summary


def check_pairs(ids, k, count):
    """The first `count` pairs (rKx-ID, rKy-ID) of a check bank's ids, seed by seed (a flow's: each seed under every
    condition before the next seed)."""
    x, y = f'r{k}x-', f'r{k}y-'
    found = sorted((i[len(x):] for i in ids if i.startswith(x)), key=lambda i: (i.rpartition('seed')[2], i))
    return [(x + i, y + i) for i in found[:count]]


def check_spares(ids, k, pairs, rng):
    """People's spare check pairs: as many as `pairs`, at random, each an x and a y sample of two seeds under one
    condition (a flow's pairs share theirs)."""
    part = lambda i: (i[len(f'r{k}')], i[len(f'r{k}x-'):].rpartition('seed')[0])     # (x or y, condition prefix).
    spares = (p for p in random_pairs(ids, rng, skip={pair_key(*p) for p in pairs})
        if part(p[0])[0] != part(p[1])[0] and part(p[0])[1] == part(p[1])[1])
    return list(itertools.islice(spares, len(pairs)))


def split_seed(union):
    """The first seed of train_reward's split by sample (its default shares) that leaves training and validation pairs
    among a union's labels: a small round can leave a split none with seed 0, and train_reward refuses that. With
    --refit-all the reward is fitted on every label anyway; the split picks its settings."""
    ids, labels = Bank(union).ids, os.path.join(union, 'labels.jsonl')
    for seed in range(SPLIT_TRIES):
        try:
            preferences.training_labels(ids, SPLIT, seed=seed, labels_path=labels)
            return seed
        except preferences.LabelError:
            continue
    return 0                                            # train_reward then says what is missing.


def flag_value(args, flag, default=None):
    """The value the last `flag` in a command line's args gives (as `flag V` or `flag=V`), else default."""
    value = default
    for a, b in zip(args, [*args[1:], None]):
        if a == flag and b is not None:
            value = b
        elif a.startswith(flag + '='):
            value = a.split('=', 1)[1]
    return value


def dpo_steps(train_args):
    """The Circular-DPO steps per stage that train_args give (the last --dpo-steps), else its default."""
    from eg3d_rlhf.finetune.circular_config import CircularDPOConfig # pylint: disable=import-outside-toplevel
    steps = flag_value(train_args, '--dpo-steps', CircularDPOConfig().dpo_steps)
    try:
        return int(steps)
    except ValueError:
        raise RunError(f'--dpo-steps {steps!r}: not a whole number') from None


def accuracy(mean, judged):
    """A reward's accuracy on decided judgements, from its {id: mean score}: against the labels, and against the
    noise-free choices where a simulated annotator recorded them (None where there are none)."""
    agree = lambda target: float(np.mean([(mean[j.a] > mean[j.b]) == (target(j) == 'a') for j in judged]))
    truth = judged and all('noise_free' in j.extra for j in judged)
    return dict(pairs=len(judged), accuracy_vs_labels=agree(lambda j: j.choice) if judged else None,
        accuracy_vs_truth=agree(lambda j: j.extra['noise_free']) if truth else None)


def accuracy_is_whole(d):
    """Whether d holds what accuracy() writes: a count of pairs and accuracies (shares or None)."""
    return isinstance(d, dict) and type(d.get('pairs')) is int and d['pairs'] >= 0 and all(
        d.get(key, 0) is None or (type(d.get(key)) in (int, float) and 0 <= d[key] <= 1)
        for key in ('accuracy_vs_labels', 'accuracy_vs_truth')) and 'accuracy_vs_labels' in d


def drift_is_whole(drift):
    """Whether a drift.json holds what labels() writes: accuracy() on all of a round's new pairs, and on its random
    and its active ones."""
    return accuracy_is_whole(drift) and accuracy_is_whole(drift.get('random')) and accuracy_is_whole(
        drift.get('active'))


def drift_of(before):
    """The previous reward's accuracy (%) on a round's new labels before the refit: on its random pairs where it has
    some (the active ones are hard by choice), else on all; None in round 0."""
    if before is None:
        return None
    value = (before.get('random') or {}).get('accuracy_vs_labels')
    value = value if value is not None else before.get('accuracy_vs_labels')
    return None if value is None else 100 * value


def plot(summary, path):
    """rounds.png: each round's gold win rate over the start (Wilson 95% bars) against the judgements so far, the
    previous reward's accuracy on the round's new labels before its refit, and where a check ran, its win rate and how
    often the reward the round tuned on scored the tuned side higher."""
    plt = report_plots._pyplot() # pylint: disable=protected-access
    fig, ax = plt.subplots(figsize=(7, 5.5))
    rows = [r for r in summary['rounds'] if r['gold'] is not None and r['gold']['win_rate'] is not None]
    n = [r['judgements'] for r in rows]
    rate = np.array([100 * r['gold']['win_rate'] for r in rows])
    bars = np.array([[rate[i] - 100 * r['gold']['wilson95'][0], 100 * r['gold']['wilson95'][1] - rate[i]]
        for i, r in enumerate(rows)]).reshape(-1, 2).T
    if rows:
        ax.errorbar(n, rate, yerr=bars, fmt='s-', color='tab:orange', capsize=3,
            label='gold: tuned preferred over the start')
    drift = [(r['judgements'], drift_of(r['before_refit'])) for r in summary['rounds'] if drift_of(r['before_refit'])
        is not None]
    if drift:
        ax.plot(*zip(*drift), 'o:', color='tab:blue', label='previous reward on the new random pairs, before refit')
    checks = [(r['judgements'], 100 * r['check']['labels']['win_rate'], r['check']['kept']) for r in summary['rounds']
        if r.get('check') and r['check']['labels']['win_rate'] is not None]
    if checks:                                          # Hollow where the round handed on the previous generator.
        ax.plot([c[0] for c in checks], [c[1] for c in checks], ':', color='tab:green')
        for kept, label in (('tuned', 'check: tuned preferred over the previous'), ('previous', 'check lost: '
                'the previous generator kept')):
            mine = [c for c in checks if c[2] == kept]
            if mine:
                ax.plot([c[0] for c in mine], [c[1] for c in mine], '^', color='tab:green', label=label,
                    markerfacecolor='tab:green' if kept == 'tuned' else 'white')
    seen = [(r['judgements'], 100 * r['check_reward']['prefers_tuned']) for r in summary['rounds']
        if (r.get('check_reward') or {}).get('prefers_tuned') is not None]
    if seen:                                            # The reward's belief about the same pairs: the gap is exploit.
        ax.plot(*zip(*seen), 'v--', color='tab:red', markerfacecolor='white',
            label='check pairs: the reward tuned on scored the tuned side higher')
    ax.axhline(50, color='grey', linewidth=0.8)
    ax.set(xlabel='judgements so far', ylabel='%', ylim=(0, 103), title='Online rounds')  # Room for 100%'s markers.
    ax.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.13), ncol=2)      # Below: it hides no point.
    report_plots._save(fig, path) # pylint: disable=protected-access


def gold_since(curves, first):
    """A round's panel gold at each tick in sd of the first round's start, since that start (None without gold)."""
    if curves['gold'] is None or first['gold'] is None:
        return None
    return (np.asarray(curves['gold']) - first['gold'][0]) / first['gold_scale']


def plot_proxy_gold(summary, path, taste=None):
    """rounds-proxy-gold.png, where a round's fine-tuning kept panel rows: each round's tuning in turn, its proxy's
    gain (its own reward, sd of its start) above, the gold taste's gain on the same panel below (sd of round 0's
    start, since that start); a round whose check kept the previous generator dashed, its successor restarting there."""
    rows = [r for r in summary['rounds'] if r.get('proxy_gold')]
    if not rows:
        return
    plt = report_plots._pyplot() # pylint: disable=protected-access
    golden = any(gold_since(r['proxy_gold'], rows[0]['proxy_gold']) is not None for r in rows)
    fig, axes = plt.subplots(2 if golden else 1, 1, sharex=True, figsize=(7, 6.5 if golden else 4), squeeze=False)
    top, bottom = axes[0, 0], axes[-1, 0]
    offset, first = 0.0, rows[0]['proxy_gold']
    for r in rows:
        curves, rejected = r['proxy_gold'], (r.get('check') or {}).get('kept') == 'previous'
        x = offset + np.asarray(curves['kimg'])
        style = dict(linestyle='--' if rejected else '-', color=f'C{r["round"] % 10}',
            markerfacecolor='white' if rejected else None)
        top.plot(x, curves['proxy_gain'], marker='o', label=f'round {r["round"]}' + (': its check kept the previous '
            'generator' if rejected else ''), **style)
        gold = gold_since(curves, first)
        if gold is not None:
            bottom.plot(x, gold, marker='s', **style)
        offset = float(x[-1])
    for ax in {top, bottom}:
        ax.axhline(0, color='grey', linewidth=0.8)
    top.set(ylabel='proxy gain (sd of the round\'s start)', title='Proxy and gold along each round\'s fine-tuning')
    if golden:
        bottom.set(ylabel=f'gold {taste or ""} (sd of round 0\'s start)')
    bottom.set(xlabel='kimg of fine-tuning, the rounds in turn (panel of the training run)')
    bottom.legend(*top.get_legend_handles_labels(), fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.18),
        ncol=2)                                         # Below the axes: it hides no point.
    report_plots._save(fig, path) # pylint: disable=protected-access


def proxy_gold_line(curves, first):
    """A round's proxy and gold along its fine-tuning in words."""
    line = f'proxy {curves["proxy_gain"][-1]:+.2f} sd of the round\'s start'
    gold = gold_since(curves, first)
    if gold is not None:
        best = int(np.argmax(gold))
        line += (f'; panel gold {gold[0]:+.2f} -> {gold[-1]:+.2f} sd since round 0\'s start, its best {gold[best]:+.2f} '
            f'at {curves["kimg"][best]:g} kimg')
    return line


def describe(summary):
    """rounds.md: a line per round."""
    lines = ['| round | judgements so far | active pairs | previous reward on the new random pairs, before refit | '
        'gold win rate vs the start | gold gain (sd) | gold win rate vs the previous round |',
        '| --- | --- | --- | --- | --- | --- | --- |']
    for r in summary['rounds']:
        before, g = r['before_refit'], r['gold']
        drift = '-' if drift_of(before) is None else f'{drift_of(before):.1f}%'
        if g is None:                                   # People, with no gold taste.
            lines.append(f'| {r["round"]} | {r["judgements"]} | {r["active"]} | {drift} | - | - | - |')
            continue
        lo, hi = g['wilson95']
        rate = 'no decided seed' if g['win_rate'] is None else \
            f'{100 * g["win_rate"]:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}%)'
        last = g.get('versus_previous')
        last = '-' if last is None or last['win_rate'] is None else f'{100 * last["win_rate"]:.1f}%'
        lines.append(f'| {r["round"]} | {r["judgements"]} | {r["active"]} | {drift} | {rate} | {g["gain_sd"]:+.2f} '
            f'| {last} |')
    checks = [r for r in summary['rounds'] if r.get('check')]
    if checks:
        lines += ['', 'Each round\'s check: its tuned generator against the one it started from, same seeds:', '']
        lines += [f'- round {r["round"]}: {check_line(r["check"], r.get("check_reward"))}' for r in checks]
    tuned = [r for r in summary['rounds'] if r.get('proxy_gold')]
    if tuned:
        lines += ['', 'Proxy and gold on the training panel along each round\'s fine-tuning (rounds-proxy-gold.png):',
            '']
        lines += [f'- round {r["round"]}: {proxy_gold_line(r["proxy_gold"], tuned[0]["proxy_gold"])}' for r in tuned]
    lines += ['', 'What else each round\'s generator changed on the held-out samples, against the start:', '']
    lines += [f'- round {r["round"]}: {r["collateral"]}' for r in summary['rounds'] if r.get('collateral')]
    return '\n'.join(lines) + '\n'


def check_line(check, reward=None):
    """A round's check in words: the tuned generator's wins and losses, the noise-free ones, what was kept, and how
    the reward it was tuned on saw the same pairs."""
    said = lambda c: f'{c["wins"]} won, {c["losses"]} lost' + (f', {c["ties"]} tied' if c['ties'] else '')
    truth = '' if check['truth'] is None else f' (noise-free: {said(check["truth"])})'
    line = f'the tuned generator {said(check["labels"])}{truth}; kept the {check["kept"]} one'
    if reward and reward.get('prefers_tuned') is not None:
        pct = lambda v: f'{100 * v:.0f}%'
        line += f'; the reward it was tuned on scored it higher on {pct(reward["prefers_tuned"])} of the pairs'
        if reward['accuracy_vs_labels'] is not None:
            line += f' and agreed with the labels on {pct(reward["accuracy_vs_labels"])}' + ('' if reward[
                'accuracy_vs_truth'] is None else f' (noise-free: {pct(reward["accuracy_vs_truth"])})')
    return line
