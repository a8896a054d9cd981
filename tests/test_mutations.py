"""Property run over hostile files: every file kind x every tool that reads it, seeded mutations, one-line refusals only."""

import csv
import io
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.helpers import mutations as M

pytestmark = pytest.mark.usefixtures('one_thread')

SEED = int(os.environ.get('EG3D_RLHF_MUTATION_SEED', 31))     # Fixed by default: CI's failures repeat anywhere.


@pytest.fixture(scope='module')
def inputs(tmp_path_factory, data, start_pkl):
    """Every input file kind, tiny, under one folder: a bank of eight balls, a bank with bank.json, judgements, a truth
    CSV, a sigma reward (.pt and .safetensors), region volumes and names, a tiny flow checkpoint with training state,
    a flow bank with judgements of its samples, a published reward bundle (zip and folder), train.py's dataset zip,
    snapshot and --config file, sigma cubes (.npy and .mrc), good/bad id lists over a bank of seeds with their scores,
    3-D landmarks, and import_ranked's ranked pairs and rankings."""
    from eg3d_rlhf.data import annotators, preferences
    from eg3d_rlhf.data.bank import Bank
    from eg3d_rlhf.data.scores import write_scores
    from eg3d_rlhf.generators import flow_heads
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.banks import ball_bank
    from tests.helpers.eg3d import tiny_generator
    from tests.helpers.flow import TINY
    from tests.helpers.rewards import tiny_sigma
    from tools import sample_bank
    from training import legacy
    root = tmp_path_factory.mktemp('inputs')
    bank, radii = ball_bank(root / 'bank', 8, seed=4)
    oracle = annotators.OracleAnnotator('nose', radii, temperature=0, seed=0)
    preferences.write_judgements(str(root / 'labels.jsonl'), oracle.judgements(oracle.draw_pairs(radii, 20)))
    write_scores(str(root / 'truth.csv'), radii)
    slab = Bank(bank).meta('ball00')['slab']
    for name in ('reward.pt', 'reward.safetensors'):
        save_reward(str(root / name), tiny_sigma(seed=7).eval(), 'sigma', slab)
    regions = np.zeros(slab['shape'], np.int64)
    regions[5:15, 5:15, 10:] = 1
    np.save(root / 'regions.npy', regions)
    (root / 'names.json').write_text('["nose"]')
    pipeline = flow_heads.build_pipeline(TINY, init_seed=0)
    optimizer = flow_heads.make_optimizer(pipeline, 1e-3)
    flow_heads.save_flow(str(root / 'flow.pt'), pipeline, TINY, training=dict(step=1, optimizer=optimizer.state_dict()))
    G = tiny_generator().eval()
    legacy.save_network_pkl(str(root / 'tiny.pkl'), dict(G=G, G_ema=G, D=None, augment_pipe=None, training_set_kwargs=None))
    result = CliRunner().invoke(sample_bank.main, ['--network', str(root / 'tiny.pkl'), '--trust-pickle', '--seeds', '0',
        '--res', '16', '--preview-res', '16', '--device', 'cpu', '--outdir', str(root / 'made')])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(sample_bank.main, ['--network', str(root / 'flow.pt'), '--seeds', '0-2', '--res', '16',
        '--preview-res', '16', '--device', 'cpu', '--outdir', str(root / 'flowbank')])
    assert result.exit_code == 0, result.output
    (root / 'flowlabels.jsonl').write_text(''.join(json.dumps(dict(a=f'c0{c}-seed00000{a}', b=f'c0{c}-seed00000{b}',
        choice=choice, annotator='me', time='2026-11-25T00:00:00')) + '\n' for c in (0, 1) for a, b, choice in
        ((0, 1, 'a'), (1, 2, 'b'), (0, 2, 'tie'))), encoding='utf-8')
    more_inputs(root, bank, data, start_pkl, slab)
    return root


def more_inputs(root, bank, data, start_pkl, slab):
    """The inputs of the tools added in the second pass (issue 31): bundle, train.py's files, cubes, id lists, rankings."""
    import shutil
    import mrcfile
    import train
    from eg3d_rlhf.data.bank import Bank
    from eg3d_rlhf.generators import flow_heads
    from tests.helpers.train import TINY_NETS, base_args
    from eg3d_rlhf.data.scores import write_scores
    from tests.helpers.banks import write_bank
    from tests.helpers.bundles import write_bundle
    write_bundle(str(root / 'bundle'))
    shutil.copy(data, root / 'heads64.zip')
    shutil.copy(start_pkl, root / 'start.pkl')
    (root / 'run.yaml').write_text(f'cfg: synthetic\ndata: {root / "heads64.zip"}\ngpus: 1\nbatch: 4\ngamma: 1\n'
        'device: cpu\nkimg: 0.008\nmbstd-group: 2\nseed: 3\n', encoding='utf-8')
    saving = base_args(str(root / 'heads64.zip'), str(root / 'runs'), '--mbstd-group', '2', '--kimg', '0.008',
        *TINY_NETS, '--resume', str(root / 'start.pkl'), '--trust-pickle', '--save-config', str(root / 'saved.yaml'))
    result = CliRunner().invoke(train.main, saving)             # A run config as train.py writes it.
    assert result.exit_code == 0, result.output
    flow_heads.convert_flow(str(root / 'flow.pt'), str(root / 'flow.safetensors'))
    cube = np.random.RandomState(0).gamma(1.0, 10.0, size=(12, 12, 12)).astype(np.float32) - 5
    np.save(root / 'cube.npy', cube)
    with mrcfile.new(str(root / 'cube.mrc')) as f:            # As EG3D's gen_samples.py writes its cubes.
        f.set_data(cube)
    balls = Bank(bank)
    write_bank(root / 'seeds', {f'seed{i:06d}': balls.slab(balls.ids[i % 8]) for i in range(16)}, slab['resolution'])
    (root / 'good.txt').write_text('# good\n0\n1\nseed000002\n3\n8\n9\n10\n11\n', encoding='utf-8')
    write_scores(str(root / 'scores.csv'), {f'seed{i:06d}': 0.25 * i - 1 for i in range(16)})
    (root / 'bad.txt').write_text('4\n5\n6\n7\n12\n13\n14\n15\n', encoding='utf-8')
    (root / 'ranked.csv').write_text(',rank1,rank2\n0,3,5\n1,5,7\n2,12,3\n3,40,41\n', encoding='utf-8')
    (root / 'ranking.csv').write_text('condition,rank1,rank2,rank3\nnose,3,5=7,11\nchin,4,seed000002,9\n', encoding='utf-8')
    points = np.random.RandomState(1).uniform(-0.25, 0.25, size=(98, 3)).astype(np.float32)
    np.save(root / 'landmarks.npy', points)                 # WFLW-98 points in world units, inside the cube.
    (root / 'ranking.jsonl').write_text('{"condition": "nose", "ranking": ["3", ["5", "7"], 11]}\n'
        '{"condition": "chin", "ranking": [4, "seed000002", "9"]}\n', encoding='utf-8')


def torch_zip(data):
    return torch.load(io.BytesIO(data), weights_only=True)

def torch_bytes(state):
    f = io.BytesIO()
    torch.save(state, f)
    return f.getvalue()

def safetensors_state(data):
    from eg3d_rlhf.rewards.checkpoint import FORMATS
    from torch_utils import safetensors_file
    return safetensors_file.load('mutated.safetensors', FORMATS, blob=data)

def flow_safetensors_state(data):
    from eg3d_rlhf.generators.flow_heads import FORMAT
    from torch_utils import safetensors_file
    return safetensors_file.load('mutated.safetensors', (FORMAT,), blob=data)

def safetensors_bytes(state):
    import tempfile
    from torch_utils import safetensors_file
    with tempfile.TemporaryDirectory() as folder:
        safetensors_file.save(os.path.join(folder, 'x.safetensors'), state)
        with open(os.path.join(folder, 'x.safetensors'), 'rb') as f:
            return f.read()

KINDS = {                       # File kind: (its file under the inputs, its mutations).
    'meta.json': ('bank/ball01/meta.json', M.JSON),
    'bank.json': ('made/bank.json', M.JSON),
    'slab .npy': ('bank/ball01/sigma_slab.npy', M.NPY),
    'judgements .jsonl': ('labels.jsonl', M.JSONL),
    'truth CSV': ('truth.csv', M.CSV),
    'scores CSV': ('scores.csv', M.CSV),
    'reward .pt': ('reward.pt', M.BYTES + M.state_edit(torch_zip, torch_bytes)),
    'reward .safetensors': ('reward.safetensors', M.BYTES + M.state_edit(safetensors_state, safetensors_bytes)),
    'flow checkpoint': ('flow.pt', M.BYTES + M.state_edit(torch_zip, torch_bytes)),
    'regions .npy': ('regions.npy', M.NPY),
    'region names': ('names.json', M.JSON),
    'reward bundle zip': ('bundle/reward.zip', M.BYTES + M.zip_members({'.yaml': M.YAML, '.pt': M.BYTES})),
    'bundle run config': ('bundle/7wnzkgie/release_config.yaml', M.YAML),
    'bundle best_model.pt': ('bundle/7wnzkgie/best_model.pt', M.BYTES + M.state_edit(torch_zip, torch_bytes)),
    'dataset zip': ('heads64.zip', M.BYTES + M.zip_members({'.json': M.JSON})),
    'snapshot .pkl': ('start.pkl', M.PICKLE),
    'train.py --config': ('run.yaml', M.YAML),
    'cube .npy': ('cube.npy', M.NPY),
    'cube .mrc': ('cube.mrc', M.MRC),
    'id list': ('good.txt', M.TEXT),
    'ranked pairs CSV': ('ranked.csv', M.CSV + M.TABLE_DIGITS),
    'ranking CSV': ('ranking.csv', M.CSV + M.TABLE_DIGITS),
    'ranking JSONL': ('ranking.jsonl', M.JSONL + M.TABLE_DIGITS),
    'landmarks .npy': ('landmarks.npy', M.NPY),
    'flow bank meta.json': ('flowbank/c01-seed000001/meta.json', M.JSON),
    'flow bank judgements': ('flowlabels.jsonl', M.JSONL),
    'saved run config': ('saved.yaml', M.RUN_YAML),
    'reward .safetensors nested': ('reward.safetensors', [M.safetensors_nest]),
    'flow .safetensors': ('flow.safetensors', [M.safetensors_nest, M.safetensors_nest] + M.BYTES +
        M.state_edit(flow_safetensors_state, safetensors_bytes)),
}


def finite_scores(out):
    """A good result of score_bank: every row of its CSV a finite number."""
    def good(result):
        with open(out, newline='', encoding='utf-8') as f:
            return all(np.isfinite(float(row['reward'])) for row in csv.DictReader(f))
    return good


def tool(name, root, out):
    """(click command, argv, outputs, good) of a reading tool on the inputs under `root`, writing under `out`."""
    import train as train_py
    from tests.helpers.train import TINY_NETS, base_args
    from tools import (annotate, attribute, convert_reward, embed, evaluate, extract_sigma, guide, import_ranked, label,
        reward_curve, sample_bank, score_bank, tails, train_flow, train_reward)
    bank, labels, o = str(root / 'bank'), str(root / 'labels.jsonl'), str(out)
    reward, flow = str(root / 'reward.pt'), str(root / 'flow.pt')
    gan = base_args(str(root / 'heads64.zip'), f'{o}/runs', '--mbstd-group', '2', '--kimg', '0.008', '--dry-run', *TINY_NETS)
    convert = lambda path: (convert_reward.main, ['--reward-model', path, '--out', f'{o}/c.pt', '--dry-run'], [f'{o}/c.pt'],
        None)
    ranked = lambda flag, path: (import_ranked.main, [flag, str(root / path), '--out', f'{o}/j.jsonl', '--dry-run'],
        [f'{o}/j.jsonl'], None)
    train = ['--device', 'cpu', '--bank', bank, '--epochs', '1', '--split', '0.5,0.25,0.25', '--out', f'{o}/r.pt']
    return {
        'score_bank': (score_bank.main, ['--device', 'cpu', '--bank', bank, '--reward-model', str(root / 'reward.pt'),
            '--out', f'{o}/s.csv'], [f'{o}/s.csv'], finite_scores(f'{o}/s.csv')),
        'score_bank (safetensors)': (score_bank.main, ['--device', 'cpu', '--bank', bank, '--reward-model',
            str(root / 'reward.safetensors'), '--out', f'{o}/s.csv'], [f'{o}/s.csv'], finite_scores(f'{o}/s.csv')),
        'annotate pairs': (annotate.main, ['pairs', '--bank', bank, '--annotator', 'oracle:nose', '--pairs', '3', '--out',
            f'{o}/l.jsonl'], [f'{o}/l.jsonl'], None),
        'sample_bank': (sample_bank.main, ['--network', str(root / 'tiny.pkl'), '--trust-pickle', '--seeds', '0', '--res',
            '16', '--preview-res', '16', '--device', 'cpu', '--outdir', str(root / 'made')], [], None),
        'train_reward --dry-run': (train_reward.main, train + ['--labels', labels, '--dry-run'], [f'{o}/r.pt'], None),
        'train_reward --truth --dry-run': (train_reward.main, train + ['--labels', labels, '--truth',
            str(root / 'truth.csv'), '--dry-run'], [f'{o}/r.pt'], None),
        'label stats': (label.main, ['stats', labels, '--json', f'{o}/stats.json'], [f'{o}/stats.json'], None),
        'tails --dry-run': (tails.main, ['--device', 'cpu', '--bank', bank, '--reward-model', str(root / 'reward.pt'),
            '--outdir', f'{o}/t', '--dry-run'], [f'{o}/t'], None),
        'attribute --dry-run': (attribute.main, ['--device', 'cpu', '--bank', bank, '--reward-model',
            str(root / 'reward.pt'), '--regions', str(root / 'regions.npy'), '--region-names', str(root / 'names.json'),
            '--outdir', f'{o}/a', '--dry-run'], [f'{o}/a'], None),
        'extract_sigma': (extract_sigma.main, ['--network', str(root / 'flow.pt'), '--seeds', '0', '--res', '12',
            '--outdir', f'{o}/x'], [f'{o}/x'], None),
        'train_flow --resume --dry-run': (train_flow.main, ['--outdir', f'{o}/run', '--resume', str(root / 'flow.pt'),
            '--device', 'cpu', '--dry-run'], [f'{o}/run'], None),
        'convert_reward --dry-run (zip)': convert(str(root / 'bundle/reward.zip')),
        'convert_reward --dry-run (folder)': convert(str(root / 'bundle/7wnzkgie')),
        'train.py --dry-run': (train_py.main, gan, [f'{o}/runs'], None),
        'train.py --resume --dry-run': (train_py.main, gan + ['--resume', str(root / 'start.pkl'), '--trust-pickle'],
            [f'{o}/runs'], None),
        'train.py --config --dry-run': (train_py.main, ['--config', str(root / 'run.yaml'), '--outdir', f'{o}/runs',
            '--dry-run'], [f'{o}/runs'], None),
        'tails --cubes --dry-run': (tails.main, ['--device', 'cpu', '--bank', bank, '--reward-model',
            str(root / 'reward.pt'), '--cubes', str(root / 'cube.npy'), '--cubes', str(root / 'cube.mrc'), '--outdir',
            f'{o}/t', '--dry-run'], [f'{o}/t'], None),
        'train_reward --good --bad --dry-run': (train_reward.main, ['--device', 'cpu', '--bank', str(root / 'seeds'),
            '--good', str(root / 'good.txt'), '--bad', str(root / 'bad.txt'), '--epochs', '1', '--split',
            '0.5,0.25,0.25', '--out', f'{o}/r.pt', '--dry-run'], [f'{o}/r.pt'], None),
        'label serve --dry-run': (label.main, ['serve', '--bank', bank, '--out', labels, '--annotator', 'alice',
            '--dry-run'], [], None),
        'import_ranked --csv --dry-run': ranked('--csv', 'ranked.csv'),
        'import_ranked --ranking CSV --dry-run': ranked('--ranking', 'ranking.csv'),
        'import_ranked --ranking JSONL --dry-run': ranked('--ranking', 'ranking.jsonl'),
        'embed --bank --dry-run': (embed.main, ['--device', 'cpu', '--bank', bank, '--reward-model', reward, '--outdir',
            f'{o}/e', '--dry-run'], [f'{o}/e'], None),
        'reward_curve --dry-run': (reward_curve.main, ['--device', 'cpu', '--bank', bank, '--outdir', f'{o}/c',
            '--dry-run'], [f'{o}/c'], None),
        'label serve --active --dry-run': (label.main, ['serve', '--bank', bank, '--out', labels, '--annotator',
            'alice', '--active', '--reward-model', reward, '--dry-run'], [], None),
        'attribute --regions landmarks --dry-run': (attribute.main, ['--device', 'cpu', '--bank', bank,
            '--reward-model', reward, '--regions', 'landmarks', '--landmarks', str(root / 'landmarks.npy'), '--outdir',
            f'{o}/a', '--dry-run'], [f'{o}/a'], None),
        'evaluate --dry-run': (evaluate.main, ['--device', 'cpu', '--original', flow, '--tuned', flow, '--reward-model',
            reward, '--seeds', '0', '--outdir', f'{o}/ev', '--dry-run'], [f'{o}/ev'], None),
        'guide flow --dry-run': (guide.main, ['flow', '--device', 'cpu', '--network', flow, '--reward-model', reward,
            '--seeds', '0', '--outdir', f'{o}/g', '--dry-run'], [f'{o}/g'], None),
        'train.py --generator=flow --dry-run': (train_py.main, ['--generator=flow', '--resume', flow, '--bank',
            str(root / 'flowbank'), '--labels', str(root / 'flowlabels.jsonl'), '--outdir', f'{o}/runs', '--dry-run'],
            [f'{o}/runs'], None),
        'train_reward --good --bad --scores --dry-run': (train_reward.main, ['--device', 'cpu', '--bank',
            str(root / 'seeds'), '--good', str(root / 'good.txt'), '--bad', str(root / 'bad.txt'), '--scores',
            str(root / 'scores.csv'), '--objective', 'dreamcs', '--epochs', '1', '--split', '0.5,0.25,0.25', '--out',
            f'{o}/r.pt', '--dry-run'], [f'{o}/r.pt'], None),
        'sample_bank (flow)': (sample_bank.main, ['--network', flow, '--seeds', '0', '--res', '16', '--preview-res',
            '16', '--device', 'cpu', '--outdir', f'{o}/fb'], [f'{o}/fb'], None),
        'train.py --config (saved) --dry-run': (train_py.main, ['--config', str(root / 'saved.yaml'), '--trust-pickle',
            '--outdir', f'{o}/runs', '--dry-run'], [f'{o}/runs'], None),
        'extract_sigma (safetensors)': (extract_sigma.main, ['--network', str(root / 'flow.safetensors'), '--seeds',
            '0', '--res', '12', '--outdir', f'{o}/x'], [f'{o}/x'], None),
    }[name]

PAIRS = [                       # Every file kind x every tool here that reads it.
    ('meta.json', 'score_bank'), ('meta.json', 'annotate pairs'), ('meta.json', 'train_reward --dry-run'),
    ('bank.json', 'sample_bank'),
    ('slab .npy', 'score_bank'), ('slab .npy', 'annotate pairs'), ('slab .npy', 'tails --dry-run'),
    ('judgements .jsonl', 'train_reward --dry-run'), ('judgements .jsonl', 'label stats'),
    ('truth CSV', 'train_reward --truth --dry-run'),
    ('reward .pt', 'score_bank'), ('reward .pt', 'tails --dry-run'), ('reward .safetensors', 'score_bank (safetensors)'),
    ('flow checkpoint', 'extract_sigma'), ('flow checkpoint', 'train_flow --resume --dry-run'),
    ('regions .npy', 'attribute --dry-run'), ('region names', 'attribute --dry-run'),
    ('reward bundle zip', 'convert_reward --dry-run (zip)'), ('bundle run config', 'convert_reward --dry-run (folder)'),
    ('bundle best_model.pt', 'convert_reward --dry-run (folder)'),
    ('dataset zip', 'train.py --dry-run'), ('snapshot .pkl', 'train.py --resume --dry-run'),
    ('train.py --config', 'train.py --config --dry-run'),
    ('cube .npy', 'tails --cubes --dry-run'), ('cube .mrc', 'tails --cubes --dry-run'),
    ('id list', 'train_reward --good --bad --dry-run'), ('judgements .jsonl', 'label serve --dry-run'),
    ('ranked pairs CSV', 'import_ranked --csv --dry-run'), ('ranking CSV', 'import_ranked --ranking CSV --dry-run'),
    ('ranking JSONL', 'import_ranked --ranking JSONL --dry-run'),
    ('meta.json', 'tails --dry-run'), ('meta.json', 'attribute --dry-run'), ('meta.json', 'embed --bank --dry-run'),
    ('meta.json', 'reward_curve --dry-run'), ('flow bank meta.json', 'train.py --generator=flow --dry-run'),
    ('slab .npy', 'attribute --dry-run'), ('slab .npy', 'embed --bank --dry-run'),
    ('slab .npy', 'reward_curve --dry-run'), ('slab .npy', 'label serve --active --dry-run'),
    ('flow bank judgements', 'train.py --generator=flow --dry-run'),
    ('scores CSV', 'train_reward --good --bad --scores --dry-run'),
    ('reward .pt', 'attribute --dry-run'), ('reward .pt', 'embed --bank --dry-run'),
    ('reward .pt', 'evaluate --dry-run'), ('reward .pt', 'guide flow --dry-run'), ('reward .pt', 'label serve --active --dry-run'),
    ('flow checkpoint', 'evaluate --dry-run'), ('flow checkpoint', 'guide flow --dry-run'),
    ('flow checkpoint', 'train.py --generator=flow --dry-run'), ('flow checkpoint', 'sample_bank (flow)'),
    ('landmarks .npy', 'attribute --regions landmarks --dry-run'),
    ('saved run config', 'train.py --config (saved) --dry-run'),
    ('reward .safetensors nested', 'score_bank (safetensors)'), ('flow .safetensors', 'extract_sigma (safetensors)'),
]


@pytest.mark.parametrize('kind, name', PAIRS, ids=[f'{k} x {t}' for k, t in PAIRS])
def test_every_mutation_is_refused_in_one_line_or_read_correctly(inputs, tiny_models, tmp_path, kind, name):
    main, argv, outputs, good = tool(name, inputs, tmp_path / 'out')
    relative, mutations = KINDS[kind]
    run = lambda: CliRunner().invoke(main, argv)
    pristine = run()                                    # The unmutated inputs work: a refusal below is the mutation's.
    assert pristine.exit_code == 0 and pristine.exception is None, pristine.output
    for out in outputs:
        M._remove(out)
    found, counts, seconds = M.mutate_and_run(str(inputs / relative), mutations, run, SEED + PAIRS.index((kind, name)),
        M.count(), outputs=outputs, root=str(inputs), good=good)
    print(f'{kind} x {name}: {sum(counts.values())} mutations in {seconds:.1f} s {counts}')
    assert not found, '\n'.join(found)
