"""Blind same-seed studies: two banks of one seed list served as hidden pairs, the unblinding key, attention checks."""

import fcntl
import os
import random
import shutil
import zlib

import numpy as np
import PIL.Image

import dnnlib
from eg3d_rlhf.data.bank import (BANK_FILE, IMAGE_FILE, META_FILE, SLAB_FILE, Bank, BankError, load_npy, preview_file,
    write_json)
from eg3d_rlhf.data.labeling import (LabelSession, check_listen, file_identity, hold_labels, move_aside, open_lock,
    pair_key, read_companion, share_hold)
from eg3d_rlhf.data.preferences import LabelError, load_judgements, now
from eg3d_rlhf.geometry import convention as conventions
from eg3d_rlhf.geometry import preview

#----------------------------------------------------------------------------
# A study of labels file FILE has two companions beside it, neither ever served:
#   FILE.key.json        the unblinding key (written atomically, once): every opaque sample token -> (bank role, id),
#                        every pair as first shown (a = left), the banks' folders, the attention checks' clean side.
#   FILE.attention/      the attention checks' two sides, a small bank: per check a clean and a flawed copy of a sample
#                        (slab with noise, floaters in the flawed one; previews, RGB render, meta.json), made in
#                        FILE.attention.new/ first.
# Judgements are the labeling page's records (labeling.py) whose "a" and "b" are sample tokens: the labels file alone
# tells nobody which side was tuned. Roles: 'original', 'tuned', and 'attention' (either side of a check).
# FILE.lock (labeling.hold_labels) is held by every server of the study while it runs; --force needs it alone.

FORMAT = 'eg3d_rlhf.study/1'
ROLES = ('original', 'tuned')
ATTENTION = 'attention'
FLOATERS = 3                        # Blobs added to an attention check's copy.
JITTER = 0.005                      # Noise in a check's slabs, times the preview level: new pictures, none visibly so.
KEY_LIMIT = 64 << 20                # Bytes a key may have (a study of 250k pairs): a larger file is none this wrote.


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


def write_attention_check(bank, sample_id, folders, rng):
    """The two sides of an attention check of one sample, as the sample folders `folders` (clean, flawed): each side a
    copy of its slab with its own slight noise (JITTER), floaters added to the flawed one, its previews rendered from
    it as its bank renders them (level, size, mesh convention), the RGB render with its own +-1 noise, the sample's
    meta.json (last). A script cannot pick out the check by bytes: no picture of either side is one another token
    serves, and each side's mesh is made from its own slab. LabelError naming the sample."""
    try:
        slab, grid, meta = bank.slab(sample_id), bank.grid(sample_id), bank.meta(sample_id)
        stored = load_npy(bank.path(sample_id, SLAB_FILE), mmap_mode='r').dtype
        settings = Bank.read_settings(bank.root) if os.path.isfile(os.path.join(bank.root, BANK_FILE)) else {}
        seen = {view: [_picture(bank.path(sample_id, preview_file(view)))] for view in preview.VIEWS}
        picture = _picture(bank.path(sample_id, IMAGE_FILE))
    except (BankError, OSError, KeyError, ValueError) as err:
        raise LabelError(f'{bank.path(sample_id)}: cannot make an attention check of it ({err}); pass --attention-rate 0') from None
    level = float(settings.get('preview_level', 10.0))
    try:
        flawed = add_floaters(slab, level, rng)
    except LabelError as err:
        raise LabelError(f'{bank.path(sample_id, SLAB_FILE)}: {err}; pass --attention-rate 0') from None
    convention = settings.get('mesh_convention', 'ours')
    images = [picture]
    for side, volume in zip(folders, (slab, flawed)):
        os.makedirs(side)
        views = _jittered_views(volume, grid, level, convention, seen['front'][0].shape[1], stored, rng, seen)
        if views is None:
            raise LabelError(f'{bank.path(sample_id)}: its previews do not change with noise (blank?), so an attention '
                'check of it would be known by its pictures; pass --attention-rate 0')
        slab_side, pictures = views
        with dnnlib.util.atomic_write(os.path.join(side, SLAB_FILE), 'wb') as f:
            np.save(f, slab_side)
        for view, shaded in pictures.items():
            preview.save_picture(shaded, os.path.join(side, preview_file(view)))
            seen[view].append(shaded)
        images.append(_dithered(picture, rng, images))
        preview.save_picture(images[-1], os.path.join(side, IMAGE_FILE))
        write_json(os.path.join(side, META_FILE), dict(meta, id=os.path.basename(side)))


def _picture(path):
    with PIL.Image.open(path) as im:
        return np.asarray(im if im.mode in ('L', 'RGB') else im.convert('RGB'))


def _jittered_views(volume, grid, level, convention, resolution, stored, rng, seen, tries=4):
    """(slab with noise near the surface, as stored; {view: uint8 preview} rendered from it) where no preview equals
    one in `seen` ({view: [pictures]}), the noise doubled while one does; None when none of `tries` does."""
    scale = max(abs(level), 1.0)
    near = np.abs(volume - level) < scale               # Far from the surface, noise could outweigh a flat field's
    for k in range(tries):                              # gradient and show in the shading.
        slab = (volume + near * rng.normal(0, JITTER * 2 ** k * scale, volume.shape)).astype(stored)
        shown = conventions.bordered(slab.astype(np.float32), grid, convention)
        pictures = preview.render_views(shown, grid, level=level, resolution=resolution)
        if not any(np.array_equal(pictures[view], other) for view in pictures for other in seen[view]):
            return slab, pictures
    return None


def _dithered(picture, rng, seen):
    """The picture with +-1 noise in its levels, equal to none in `seen`."""
    while True:
        out = np.clip(picture.astype(np.int16) + rng.randint(-1, 2, picture.shape), 0, 255).astype(np.uint8)
        if not any(np.array_equal(out, other) for other in seen):
            return out

#----------------------------------------------------------------------------
# The key.

def make_study(out, original, tuned, ids, attention, seed=0, replace=False):
    """Write the key of a new study (and its attention checks) beside the labels file `out`: one opaque token per
    sample, the tuned side of each pair drawn at random (by the system's generator, not the seed: knowing the seed
    tells nothing), `attention` checks of random samples of either bank. The checks are made in a folder of their
    own first; only then are the old labels, key and checks moved aside (labeling.move_aside, with `replace`) and the
    new ones put in place, the key last, atomically."""
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
    staging = f'{folder}.new'
    for left in (staging, None if replace else folder):  # Left by a start killed before its key: nothing refers to them.
        if left is not None and os.path.exists(left):
            shutil.rmtree(left)
    rng = np.random.RandomState(draw.getrandbits(32))
    try:
        for k in range(attention):
            names = (f'check{k:04d}-clean', f'check{k:04d}-flawed')
            write_attention_check(banks[draw.choice(ROLES)], draw.choice(list(ids)),
                [os.path.join(staging, name) for name in names], rng)
            clean, flawed = token(), token()
            samples[clean], samples[flawed] = (dict(bank=ATTENTION, id=name) for name in names)
            pair = [clean, flawed]
            draw.shuffle(pair)
            checks.append(dict(a=pair[0], b=pair[1], clean=clean))
        if replace:
            move_aside(out, key_path(out), folder)
        if attention:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    key = dict(format=FORMAT, time=now(), seed=seed, banks=dict(original=os.path.realpath(original.root),
        tuned=os.path.realpath(tuned.root), attention=os.path.realpath(folder) if attention else None),
        samples=samples, pairs=pairs, attention=checks)
    write_json(key_path(out), key)
    return Study(key, key_path(out))


class OpaqueSamples:
    """Samples behind opaque tokens: self.samples {token: (bank name, sample id)}, self.key['banks'] {name: folder},
    self.path the key file; banks are opened once, on first use. While a server serves them, self.hold is its
    labeling.hold_labels lock (close() lets go)."""

    def __init__(self, key, path):
        self.key, self.path = key, path
        self.samples = {t: (s['bank'], s['id']) for t, s in key['samples'].items()}
        self.identity = file_identity(path)             # The key file as read: check_current compares.
        self.hold = None
        self._banks = {}

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

    def check_current(self):
        """OSError unless the key file is still the one read: records of these tokens never go into a file whose key
        was replaced (by a start with --force) under the server that writes them."""
        if file_identity(self.path) != self.identity:
            raise OSError(f'{self.path}: replaced since this server started (a new start with --force?); nothing was '
                'written; stop this server')

    def close(self):
        """Let go of the right to serve the labels file (hold_labels), if held."""
        if self.hold is not None:
            self.hold.close()
            self.hold = None


def hold_key(out, force, open_key):
    """The key open_key() opens or makes for labels file `out`, holding the right to serve it (hold_labels, as
    key.hold) from before it is opened: exclusive with `force` (a LabelError while another server holds it; shared
    once the new key is in place), and under an flock on FILE.key.lock, so two servers starting at once make one key."""
    hold = hold_labels(out, exclusive=force)
    try:
        with open_lock(f'{os.path.realpath(out)}.key.lock') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            key = open_key()
        if force:
            share_hold(hold)
            key.check_current()                         # Another --force start between the two locks.
        key.hold = hold
        return key
    except BaseException:
        hold.close()
        raise


class Study(OpaqueSamples):
    """A study's key, read: sample tokens to (bank, id), the pairs and attention checks, each annotator's order."""

    def __init__(self, key, path):
        super().__init__(key, path)
        self.pairs = [(p['a'], p['b']) for p in key['pairs']]
        self.checks = [(p['a'], p['b']) for p in key['attention']]
        self.clean = {pair_key(p['a'], p['b']): p['clean'] for p in key['attention']}

    @classmethod
    def load(cls, path):
        """The key at `path`, checked; LabelError naming the file."""
        key = read_companion(path, KEY_LIMIT, 'restore the study\'s key, or start a new study with --force (the old '
            'files are moved aside)')
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
        self.study = self.opaque = study

    def _repeat_candidates(self):
        return [r for r in super()._repeat_candidates() if pair_key(r['a'], r['b']) not in self.study.clean]

    def _state(self):
        return dict(super()._state(), blind=True)


def open_study(out, original, tuned, pairs=None, attention_rate=None, seed=None, force=False, dry_run=False,
        address=None):
    """The Study of labels file `out` (open_study_unlocked), holding the right to serve it until study.close() or the
    end of the process (hold_key). `force` starts a new study once everything is checked (the banks, `pairs`, that no
    other server holds the file, that the page can listen on `address` (host, port), the attention checks made):
    only then are the old labels, key and checks moved aside (labeling.move_aside), so a refused start moves nothing.
    With dry_run, None where a new study would be made (nothing is written)."""
    check_paired(original, tuned)
    new = force or not os.path.exists(key_path(out))
    if dry_run and new:
        return None
    if force:
        study_ids(original, pairs, seed or 0)           # A refusal before the lock is taken.
    return hold_key(out, force, lambda: open_study_unlocked(out, original, tuned, pairs, attention_rate, seed, force,
        address if new else None))


def study_ids(original, pairs, seed):
    """The ids of a new study of `pairs` pairs: a subset seeded by `seed`, all when None; LabelError for more than the
    banks hold."""
    ids = original.ids
    if pairs is None:
        return ids
    if pairs > len(ids):
        raise LabelError(f'{pairs} pairs asked for, but the banks hold {len(ids)} samples')
    return sorted(np.random.RandomState(seed).choice(ids, pairs, replace=False).tolist())


def attention_count(rate, pairs):
    """Attention checks of a study of `pairs` pairs at `rate`: at least one for a rate above 0."""
    return max(1, round(rate * pairs)) if rate else 0


def open_study_unlocked(out, original, tuned, pairs=None, attention_rate=None, seed=None, force=False, address=None):
    """The Study of labels file `out`. Without a key yet (or with `force`), a new one (make_study) of `pairs` ids of
    the banks (study_ids) and attention_count checks, once the page can listen on `address` (None: not checked). With
    a key, it is read and checked against the banks and against the settings given (None: as the key says).
    LabelError, before any write, for a key of other banks or settings, or labels without a key."""
    path = key_path(out)
    if force or not os.path.exists(path):
        if not force and os.path.exists(out) and os.path.getsize(out) > 0:
            raise LabelError(f'{out}: holds labels but there is no key {path}: they cannot be unblinded; choose another '
                '--out (or --force moves it aside)')
        ids = study_ids(original, pairs, seed or 0)
        if address is not None:
            check_listen(*address)
        return make_study(out, original, tuned, ids, attention_count(attention_rate, len(ids)), seed or 0, replace=force)
    study = Study.load(path)
    asked = dict(original=os.path.realpath(original.root), tuned=os.path.realpath(tuned.root))
    for role in ROLES:
        if study.key['banks'][role] != asked[role]:
            raise LabelError(f'{path}: this study compares --{role} {study.key["banks"][role]}, not {asked[role]}; pass '
                'the same banks, or --force to start a new study (the old one is moved aside)')
    n = len(study.pairs)
    got = dict(pairs=n, attention=len(study.checks), seed=study.key['seed'])
    want = dict(pairs=pairs, seed=seed, attention=None if attention_rate is None else attention_count(attention_rate, n))
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
