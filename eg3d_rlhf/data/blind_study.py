"""Blind same-seed studies: two banks of one seed list served as hidden pairs, the unblinding key, attention checks."""

import fcntl
import json
import os
import random
import shutil
import zlib

import numpy as np
import PIL.Image

import dnnlib
from eg3d_rlhf.data.bank import BANK_FILE, IMAGE_FILE, META_FILE, SLAB_FILE, Bank, BankError, preview_file, write_json
from eg3d_rlhf.data.labeling import LabelSession, open_lock, pair_key
from eg3d_rlhf.data.preferences import LabelError, load_judgements, now
from eg3d_rlhf.geometry import convention as conventions
from eg3d_rlhf.geometry import preview

#----------------------------------------------------------------------------
# A study of labels file FILE has two companions beside it, neither ever served:
#   FILE.key.json        the unblinding key (written atomically, once): every opaque sample token -> (bank role, id),
#                        every pair as first shown (a = left), the banks' folders, the attention checks' clean side.
#   FILE.attention/      the attention checks' flawed copies, a small bank (slab with floaters, previews, meta.json).
# Judgements are the labeling page's records (labeling.py) whose "a" and "b" are sample tokens: the labels file alone
# tells nobody which side was tuned. Roles: 'original', 'tuned', and 'attention' (a flawed copy).

FORMAT = 'eg3d_rlhf.study/1'
ROLES = ('original', 'tuned')
ATTENTION = 'attention'
FLOATERS = 3                        # Blobs added to an attention check's copy.


def key_path(out):
    return f'{out}.key.json'


def attention_dir(out):
    return f'{out}.attention'

#----------------------------------------------------------------------------
# The two banks.

def _slab_of(bank, sample_id):
    meta = bank.meta(sample_id)
    slab = meta.get('slab') if isinstance(meta, dict) else None
    return None if slab is None else {k: slab.get(k) for k in ('shape', 'start', 'stop')}


def check_paired(original, tuned):
    """LabelError unless two Banks are different folders holding the same sample ids on the same slab grids (two
    generators drawn by tools/sample_bank.py with one --seeds and --res)."""
    if os.path.realpath(original.root) == os.path.realpath(tuned.root):
        raise LabelError(f'{tuned.root}: the same bank as --original; a study compares two generators\' banks')
    for a, b in ((original, tuned), (tuned, original)):
        missing = sorted(set(a.ids) - set(b.ids))
        if missing:
            raise LabelError(f'{b.root}: has no sample {missing[0]} that {a.root} has ({len(missing)} ids differ); draw both '
                'banks with the same --seeds (tools/sample_bank.py)')
    for sample_id in original.ids:
        try:
            grids = _slab_of(original, sample_id), _slab_of(tuned, sample_id)
        except (OSError, ValueError) as err:
            raise LabelError(f'{sample_id}/{META_FILE}: cannot be read ({err}); redraw the sample') from None
        if grids[0] != grids[1]:
            raise LabelError(f'{tuned.path(sample_id, META_FILE)}: slab grid {grids[1]} differs from {original.root}\'s '
                f'{grids[0]}; draw both banks with the same --res (tools/sample_bank.py)')

#----------------------------------------------------------------------------
# Attention checks: a sample against a copy of itself with floaters, rendered like its bank's previews.

def add_floaters(slab, level, rng, count=FLOATERS):
    """The slab with `count` blobs above `level` in empty space, where the front view sees them when it can (in front
    of the surface); LabelError when the slab has no surface at `level`."""
    inside = slab >= level
    if not inside.any():
        raise LabelError('no surface at the preview level to put floaters beside')
    shape = np.array(slab.shape)
    r = max(1.5, 0.06 * float(shape.min()))
    import scipy.ndimage  # pylint: disable=import-outside-toplevel  # 0.3 s to import; a study's start needs none.
    empty = scipy.ndimage.distance_transform_edt(~inside)
    idx = np.indices(slab.shape)
    margin = np.all([(idx[a] > r) & (idx[a] < shape[a] - 1 - r) for a in range(3)], axis=0)
    front = np.where(inside.any(axis=2), slab.shape[2] - 1 - np.argmax(inside[:, :, ::-1], axis=2), -1)   # Last z inside.
    free = margin & (empty > 2 * r + 1)
    seen = free & (idx[2] > front[:, :, None])
    candidates = np.argwhere(seen if seen.any() else free)
    if len(candidates) == 0:
        raise LabelError('no empty space in the slab to put floaters in')
    peak = max(float(slab.max()), level + 10.0)
    out = slab.astype(np.float32).copy()
    for k in rng.choice(len(candidates), size=min(count, len(candidates)), replace=False):
        d = np.sqrt(((idx - candidates[k][:, None, None, None]) ** 2).sum(axis=0))
        out = np.maximum(out, level + (peak - level) * np.clip(r - d, -1, 1))
    return out


def write_attention_copy(bank, sample_id, folder, rng):
    """A flawed copy of one sample in `folder` (a bank sample folder): floaters in its slab, previews rendered as its
    bank's (level, size, mesh convention), the same RGB render; meta.json last. LabelError naming the sample."""
    try:
        slab, grid, meta = bank.slab(sample_id), bank.grid(sample_id), bank.meta(sample_id)
        settings = Bank.read_settings(bank.root) if os.path.isfile(os.path.join(bank.root, BANK_FILE)) else {}
        with PIL.Image.open(bank.path(sample_id, preview_file('front'))) as im:
            resolution = im.size[0]
    except (BankError, OSError, KeyError, ValueError) as err:
        raise LabelError(f'{bank.path(sample_id)}: cannot make an attention check of it ({err}); pass --attention-rate 0') from None
    level = float(settings.get('preview_level', 10.0))
    try:
        flawed = add_floaters(slab, level, rng)
    except LabelError as err:
        raise LabelError(f'{bank.path(sample_id, SLAB_FILE)}: {err}; pass --attention-rate 0') from None
    os.makedirs(folder, exist_ok=True)
    with dnnlib.util.atomic_write(os.path.join(folder, SLAB_FILE), 'wb') as f:
        np.save(f, flawed.astype(slab.dtype))
    shutil.copyfile(bank.path(sample_id, IMAGE_FILE), os.path.join(folder, IMAGE_FILE))
    shown = conventions.bordered(flawed, grid, settings.get('mesh_convention', 'ours'))
    for view, picture in preview.render_views(shown, grid, level=level, resolution=resolution).items():
        preview.save_picture(picture, os.path.join(folder, preview_file(view)))
    write_json(os.path.join(folder, META_FILE), dict(id=os.path.basename(folder), slab=meta.get('slab')))

#----------------------------------------------------------------------------
# The key.

def make_study(out, original, tuned, ids, attention, seed=0):
    """Write the key of a new study (and its attention checks) beside the labels file `out`: one opaque token per
    sample, the tuned side of each pair drawn at random (by the system's generator, not the seed: knowing the seed
    tells nothing), `attention` checks of random samples of either bank. The key is written last, atomically."""
    draw = random.SystemRandom()
    token = lambda: '%016x' % draw.getrandbits(64)
    banks = dict(original=original, tuned=tuned)
    samples, pairs, checks = {}, [], []
    for sample_id in ids:
        t = {role: token() for role in ROLES}
        samples.update({t[role]: dict(bank=role, id=sample_id) for role in ROLES})
        left = draw.choice(ROLES)
        pairs.append(dict(a=t[left], b=t[ROLES[1 - ROLES.index(left)]]))
    folder = attention_dir(out)
    if os.path.exists(folder):                          # Left by a start killed before its key: nothing refers to it.
        shutil.rmtree(folder)
    rng = np.random.RandomState(draw.getrandbits(32))
    for k in range(attention):
        role, sample_id = draw.choice(ROLES), draw.choice(list(ids))
        name = f'check{k:04d}'
        write_attention_copy(banks[role], sample_id, os.path.join(folder, name), rng)
        clean, flawed = token(), token()
        samples[clean], samples[flawed] = dict(bank=role, id=sample_id), dict(bank=ATTENTION, id=name)
        pair = [clean, flawed]
        draw.shuffle(pair)
        checks.append(dict(a=pair[0], b=pair[1], clean=clean))
    key = dict(format=FORMAT, time=now(), seed=seed, banks=dict(original=os.path.realpath(original.root),
        tuned=os.path.realpath(tuned.root), attention=os.path.realpath(folder) if attention else None),
        samples=samples, pairs=pairs, attention=checks)
    write_json(key_path(out), key)
    return Study(key, key_path(out))


class OpaqueSamples:
    """Samples behind opaque tokens: self.samples {token: (bank name, sample id)}, self.key['banks'] {name: folder},
    self.path the key file; banks are opened once, on first use."""

    def bank(self, name):
        """The Bank of a name (a study's role, a ratings page's bank label), opened once."""
        if name not in self._banks:
            try:
                self._banks[name] = Bank(self.key['banks'][name])
            except BankError as err:
                raise LabelError(f'{self.path}: {err} (the bank moved?)') from None
        return self._banks[name]

    def sample_of(self, token):
        """(Bank, sample id) that an opaque token stands for, or None for a token of no sample."""
        found = self.samples.get(token)
        if found is None:
            return None
        bank = self.bank(found[0])
        return (bank, found[1]) if found[1] in bank else None


class Study(OpaqueSamples):
    """A study's key, read: sample tokens to (bank, id), the pairs and attention checks, each annotator's order."""

    def __init__(self, key, path):
        self.key, self.path = key, path
        self.samples = {t: (s['bank'], s['id']) for t, s in key['samples'].items()}
        self.pairs = [(p['a'], p['b']) for p in key['pairs']]
        self.checks = [(p['a'], p['b']) for p in key['attention']]
        self.clean = {pair_key(p['a'], p['b']): p['clean'] for p in key['attention']}
        self._banks = {}

    @classmethod
    def load(cls, path):
        """The key at `path`, checked; LabelError naming the file."""
        try:
            with open(path, encoding='utf-8') as f:
                key = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise LabelError(f'{path}: not a study key ({err})') from None
        try:
            assert key['format'] == FORMAT and isinstance(key['samples'], dict)
            assert all(s['bank'] in (*ROLES, ATTENTION) and isinstance(s['id'], str) for s in key['samples'].values())
            for p in key['pairs'] + key['attention']:
                assert p['a'] in key['samples'] and p['b'] in key['samples'] and p['a'] != p['b']
            assert all(p['clean'] in (p['a'], p['b']) for p in key['attention'])
            assert all(isinstance(key['banks'][r], str) for r in ROLES) and isinstance(key['seed'], int)
        except (AssertionError, KeyError, TypeError):
            raise LabelError(f'{path}: not a study key of format {FORMAT} (damaged?); it cannot be used') from None
        return cls(key, path)


    def role(self, token):
        return self.samples[token][0]

    def order(self, annotator):
        """Every pair and attention check once, in an order of the annotator's own (seeded by the key's seed and the
        name), the checks spread among the pairs."""
        rng = np.random.RandomState((self.key['seed'] + zlib.crc32(annotator.encode('utf-8'))) % 2**32)
        items = [self.pairs[i] for i in rng.permutation(len(self.pairs))]
        for check in self.checks:
            items.insert(rng.randint(len(items) + 1), check)
        return items

#----------------------------------------------------------------------------

class StudySession(LabelSession):
    """A LabelSession of a study for one annotator: the key's pairs in the annotator's order (sides as the key drew
    them), repeats of study pairs only (never of attention checks), and a state that says the page is blind."""

    def __init__(self, path, annotator, study, repeat_rate=0.0, seed=0):
        items = study.order(annotator)
        super().__init__(path, annotator, iter(items), len(items), repeat_rate=repeat_rate, seed=seed,
            known_ids=list(study.samples))
        self.study = study

    def _repeat_candidates(self):
        return [r for r in super()._repeat_candidates() if pair_key(r['a'], r['b']) not in self.study.clean]

    def _state(self):
        return dict(super()._state(), blind=True)


def open_study(out, original, tuned, pairs=None, attention_rate=None, seed=None, force=False, dry_run=False):
    """open_study_unlocked under an flock on FILE.key.lock: two servers starting one study at once make one key. With
    dry_run, None where a new study would be made (nothing is written)."""
    check_paired(original, tuned)
    if dry_run and (force or not os.path.exists(key_path(out))):
        return None
    with open_lock(f'{os.path.realpath(out)}.key.lock') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return open_study_unlocked(out, original, tuned, pairs, attention_rate, seed, force)


def open_study_unlocked(out, original, tuned, pairs=None, attention_rate=None, seed=None, force=False):
    """The Study of labels file `out`. Without a key yet, a new one (make_study) of `pairs` ids of the banks (a seeded
    subset; all when None) and round(attention_rate * pairs) attention checks (at least one for a rate above 0). With
    a key, it is read and checked against the banks and against the settings given (None: as the key says).
    LabelError, before any write, for a key of other banks or settings, or labels without a key; `force` moves the
    old labels, key and checks aside (FILE.replaced-TIME, never deleted) and starts anew."""
    path = key_path(out)
    if force:
        stamp = now().replace(':', '')
        for old in (out, path, attention_dir(out)):
            if os.path.exists(old):
                os.replace(old, f'{old}.replaced-{stamp}')
    seed = 0 if seed is None and not os.path.exists(path) else seed
    if not os.path.exists(path):
        if os.path.exists(out) and os.path.getsize(out) > 0:
            raise LabelError(f'{out}: holds labels but there is no key {path}: they cannot be unblinded; choose another '
                '--out (or --force moves it aside)')
        ids = original.ids
        if pairs is not None:
            if pairs > len(ids):
                raise LabelError(f'{pairs} pairs asked for, but the banks hold {len(ids)} samples')
            ids = sorted(np.random.RandomState(seed).choice(ids, pairs, replace=False).tolist())
        rate = attention_rate or 0.0
        return make_study(out, original, tuned, ids, max(1, round(rate * len(ids))) if rate > 0 else 0, seed)
    study = Study.load(path)
    asked = dict(original=os.path.realpath(original.root), tuned=os.path.realpath(tuned.root))
    for role in ROLES:
        if study.key['banks'][role] != asked[role]:
            raise LabelError(f'{path}: this study compares --{role} {study.key["banks"][role]}, not {asked[role]}; pass '
                'the same banks, or --force to start a new study (the old one is moved aside)')
    n = len(study.pairs)
    got = dict(pairs=n, attention=len(study.checks), seed=study.key['seed'])
    want = dict(pairs=pairs, seed=seed,
        attention=None if attention_rate is None else max(1, round(attention_rate * n)) if attention_rate > 0 else 0)
    changed = [k for k in got if want[k] is not None and want[k] != got[k]]
    if changed:
        raise LabelError(f'{path}: made with {", ".join(f"{k} {got[k]}" for k in changed)}, not '
            f'{", ".join(str(want[k]) for k in changed)}; leave those options out to resume it, or --force to start a '
            'new study (the old one is moved aside)')
    return study


def study_judgements(path, study, repeats=True):
    """The study's standing judgements (undone ones gone; repeats kept unless told) whose tokens the key knows."""
    return load_judgements(path, known_ids=list(study.samples), repeats=repeats) if os.path.exists(path) else []

#----------------------------------------------------------------------------
