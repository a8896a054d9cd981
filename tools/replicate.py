"""Tuned against original (or one method against others) over training seeds: a report or blind study per seed."""

import math
import os
import re

import click

import dnnlib
from eg3d_rlhf.analysis import collateral, replication
from eg3d_rlhf.analysis.study import study_outcomes
from eg3d_rlhf.cli import OUT_DIR
from eg3d_rlhf.data import annotators
from eg3d_rlhf.data.blind_study import Study, key_path, study_judgements
from eg3d_rlhf.data.preferences import LabelError

#----------------------------------------------------------------------------

def parse_report(text):
    """(method or None, training seed, report folder) of '[METHOD:]SEED=REPORT'."""
    head, sep, folder = text.partition('=')
    method, colon, seed = head.rpartition(':')
    if not sep or not seed.strip().isdigit() or not folder or (colon and not re.fullmatch(r'[A-Za-z0-9_.()-]+', method)):
        raise click.UsageError(f'{text!r}: expected [METHOD:]SEED=REPORT (a method\'s name, the training seed, then '
            'the folder tools/evaluate.py wrote), e.g. 100=out/eval-seed100 or grpo:100=out/grpo-100/eval-grpo')
    return method or None, int(seed), folder


def tuned_records(seed, path, taste):
    """Records of 'tuned vs original' of one training seed's evaluate report: the taste's choice on each id."""
    ids, original, tuned = read_measures(path, taste)
    return replication.records('tuned vs original', seed, ids, replication.preference_outcomes(tuned, original, taste))


def method_records(runs, taste):
    """Records of 'FIRST vs OTHER' for each other method: per training seed, the taste's choice between the two
    methods' tuned samples of each held-out id (both reports must hold the same ids)."""
    by = {}
    for method, seed, path in runs:
        by.setdefault(method, {})[seed] = (path, read_measures(path, taste))
    (first, *others), rows = by, []
    for other in others:
        if sorted(by[other]) != sorted(by[first]):
            raise click.UsageError(f'{other} has training seeds {sorted(by[other])} and {first} {sorted(by[first])}: a '
                'contrast pairs the two methods\' runs of each seed; give both the same seeds')
        for seed in sorted(by[first]):
            (a_path, (a_ids, _, a)), (b_path, (b_ids, _, b)) = by[first][seed], by[other][seed]
            if a_ids != b_ids:
                raise click.UsageError(f'{a_path} and {b_path}: other held-out ids; evaluate both on the same '
                    '--eval-seeds')
            rows += replication.records(f'{first} vs {other}', seed, a_ids, replication.preference_outcomes(a, b, taste))
    return rows


def read_measures(folder, taste):
    """(ids, original measures, tuned measures) of an evaluate report folder's measures.json; a one-line usage
    error naming the file when it is not what compare() writes or the taste has a score that is not finite."""
    path = os.path.join(folder, 'measures.json')
    try:
        data = dnnlib.util.read_json_object(path, limit=1 << 26)
    except (OSError, dnnlib.util.BadFile) as err:
        raise click.UsageError(f'{path}: cannot be read ({getattr(err, "strerror", None) or err}); give a folder '
            'tools/evaluate.py wrote') from None
    ids = data.get('ids')
    good = isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids) and \
        all(collateral.well_formed(data.get(side), len(ids)) for side in ('original', 'tuned'))
    if not good:
        raise click.UsageError(f'{path}: not the per-sample measures tools/evaluate.py writes (ids, original, tuned)')
    if not all(math.isfinite(v) for side in ('original', 'tuned') for v in data[side]['tastes'][taste]):
        raise click.UsageError(f'{path}: a {taste} score that is not a finite number; evaluate again')
    return ids, data['original'], data['tuned']


def study_records(seed, path):
    """Records of one training seed's blind study (tools/label.py study's labels file, its key beside it): each
    annotator's standing choice per same-seed pair, clustered by the held-out seed, so several people judging one
    pair count as one unit."""
    try:
        study = Study.load(key_path(path))
        outcomes = study_outcomes(study_judgements(path, study), study)
    except LabelError as err:
        raise click.UsageError(str(err)) from None
    if not outcomes:
        raise click.UsageError(f'{path}: no judged pairs yet; play or run the study first')
    names = dict(tuned='win', original='loss', tie='tie')
    return [dict(contrast='tuned vs original', seed=seed, id=f'{who}/{sid}', cluster=replication.noise_cluster(sid),
        value=replication.OUTCOMES[names[c]]) for who, sid, c in outcomes]

#----------------------------------------------------------------------------

@click.command()
@click.argument('reports', nargs=-1, required=True, metavar='[METHOD:]SEED=REPORT...')
@click.option('--taste', type=click.Choice(list(annotators.TASTES)),
    help='The simulated taste judging each id of evaluate reports, tuned against original or one method\'s tuned '
    'against another\'s (temperature 0, as the collateral table); blind studies are judged by their annotators')
@click.option('--outdir', type=OUT_DIR, required=True, metavar='DIR',
    help='Where replication.md, replication.json and the forest plot go; refused when not empty, unless --force')
@click.option('--force', is_flag=True, help='Write into a non-empty --outdir (its replication files are replaced)')
def main(reports, taste, outdir, force):
    """Test a fine-tuning method over training seeds: given one tools/evaluate.py report per training seed (each the
    run of that seed against the original, on the same held-out seeds), the share of ids whose tuned sample the
    taste prefers per seed (ties half, with a cluster-aware interval), across the seeds (Wilcoxon signed-rank) and
    in a model of every pair (eg3d_rlhf/analysis/replication.py); replication.md, replication.json and a forest plot.
    Reports named by method (METHOD:SEED=REPORT, each method's runs of the same seeds on the same held-out ids)
    compare methods instead: the first named against each other, id by id, their tuned samples judged by the taste
    (Holm over those contrasts). Run it once per taste for the collateral.

    \b
    python tools/replicate.py --taste nose --outdir out/replication 100=out/eval-100 101=out/eval-101 102=out/eval-102
    python tools/replicate.py --taste proportions --outdir out/methods grpo:200=RUN/eval-grpo dpo:200=RUN2/eval-a ...
    """
    runs = [parse_report(r) for r in reports]
    methods = list(dict.fromkeys(method for method, _, _ in runs))
    if len({(method, seed) for method, seed, _ in runs}) != len(runs):
        raise click.UsageError('give each training seed once' + (' per method' if methods != [None] else ''))
    if methods != [None] and (None in methods or len(methods) < 2):
        raise click.UsageError('name the method of every report (METHOD:SEED=REPORT), two methods or more, to compare '
            'methods; or name none, to compare each seed\'s tuned model with the original')
    if os.path.isdir(outdir) and os.listdir(outdir) and not force:
        raise click.UsageError(f'--outdir={outdir} is not empty; give another folder, or --force to write into it')
    studies = [os.path.isfile(path) for _, _, path in runs]
    if any(studies) and not all(studies):
        raise click.UsageError('give either evaluate report folders or blind studies\' labels files, not both')
    if any(studies) and methods != [None]:
        raise click.UsageError('methods are compared on evaluate report folders, not blind studies')
    if not any(studies) and taste is None:
        raise click.UsageError('--taste is needed to judge evaluate reports (e.g. --taste nose)')
    if methods != [None]:
        rows = method_records(runs, taste)
    elif all(studies):
        rows = [r for _, seed, path in runs for r in study_records(seed, path)]
    else:
        rows = [r for _, seed, path in runs for r in tuned_records(seed, path, taste)]
    held_out = {int(m.group(1)) for r in rows for m in [re.search(r'(?:^|-)seed([0-9]+)$', r['cluster'])] if m}
    family = 'flow' if any(re.match(r'c[0-9]+-seed', r['id'].rpartition('/')[2]) for r in rows) else 'eg3d'
    warning = replication.dev_overlap(family, sorted({seed for _, seed, _ in runs}), held_out)
    if warning:
        click.echo(warning, err=True)
    table = replication.replicate(rows)
    replication.write(table, outdir)
    print(replication.markdown(table) + '\n' + '\n'.join(c['result'] for c in table['contrasts']) +
        f'\nTable: {os.path.join(outdir, "replication.md")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
