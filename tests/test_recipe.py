"""train.py --recipe=paper: the published fine-tuning's values, each overridable, in the options; contradictions refused."""

import json
import os

import pytest
from click.testing import CliRunner

import dnnlib
import train
from eg3d_rlhf.finetune import gan_run
from eg3d_rlhf.finetune import recipes
from eg3d_rlhf.synthetic import demo
from tests.helpers.evaluate import save_feature_network
from tests.helpers.train import make_zip_dataset
from training import legacy
from training import training_loop

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('recipe')
    return dnnlib.EasyDict(data=make_zip_dataset(root / 'ffhq64.zip'), root=root,
        features=save_feature_network(str(root / 'features.pt'), 'torchscript'))


def recipe_args(files, outdir, *extra, drop=()):
    args = dict([('--outdir', str(outdir)), ('--recipe', 'paper'), ('--data', files.data), ('--resume', 'G.pkl'),
        ('--reward-model', demo.reward_model('sigma')), ('--inception', files.features), ('--device', 'cpu')])
    for flag in drop:
        del args[flag]
    return [*sum(args.items(), ()), '--trust-pickle', *extra]


def config(args):
    ctx = train.main.make_context('train.py', list(args))
    return gan_run.make_config(ctx.params, train.explicit_options(ctx))[0]


def at(c, path):
    for key in path.split('.'):
        c = c.get(key) if isinstance(c, dict) else None
    return c

# Where each recipe value lands in the training options (EG3D's keys, the reward phase's, the panel's, the metrics').
LANDS = dict(
    gpus='num_gpus', batch='batch_size', gamma='loss_kwargs.r1_gamma', glr='G_opt_kwargs.lr', dlr='D_opt_kwargs.lr',
    gen_pose_cond=None, neural_rendering_resolution_final='loss_kwargs.neural_rendering_resolution_final',
    resume_kimg='resume_kimg', kimg='total_kimg', tick='kimg_per_tick', snap='network_snapshot_ticks', d_fakes='loss_kwargs.d_fakes',
    batch_gpu='batch_gpu', mbstd_group='D_kwargs.epilogue_kwargs.mbstd_group_size', cfg=None,
    reward='loss_kwargs.reward_kwargs.reward', lambda_r='loss_kwargs.reward_kwargs.lambda_r',
    reward_loss='loss_kwargs.reward_kwargs.reward_loss', reward_psi='loss_kwargs.reward_kwargs.reward_psi',
    reward_cutoff='loss_kwargs.reward_kwargs.reward_cutoff', reward_every='reward_interval', reward_optimizer=None,
    reward_step='loss_kwargs.reward_kwargs.reward_step',
    lambda_sigma='loss_kwargs.reward_kwargs.lambda_sigma', sigma_grid='loss_kwargs.reward_kwargs.sigma_grid',
    sigma_psi='loss_kwargs.reward_kwargs.sigma_psi', sigma_cutoff='loss_kwargs.reward_kwargs.sigma_cutoff',
    sigma_reduce='loss_kwargs.reward_kwargs.sigma_reduce', panel_seeds='panel_kwargs.seeds',
    panel_psi='panel_kwargs.truncation_psi', metrics='metrics_kwargs.metrics', metrics_ticks='metrics_ticks',
)

#----------------------------------------------------------------------------

def test_the_paper_recipe_sets_every_value(files, tmp_path):
    c = config(recipe_args(files, tmp_path))
    assert set(LANDS) == set(recipes.PAPER)
    for key, path in LANDS.items():
        if path is not None and key != 'reward':
            assert at(c, path) == recipes.PAPER[key], key
    assert c.loss_kwargs.reward_kwargs.reward == 'sigma'                # The --reward-model's kind (the bundle's: sigma-unet).
    assert c.G_kwargs.rendering_kwargs.c_gen_conditioning_zero is False                     # gen_pose_cond.
    assert c.G_kwargs.rendering_kwargs.avg_camera_pivot == [0, 0, 0.2]                      # ffhq's cameras.
    assert c.loss_kwargs.reward_kwargs.clip == 10.0 and c.G_reg_interval == 4               # Defaults it shares.
    assert c.metrics_kwargs.inception == files.features and c.metrics_kwargs.trust_pickle
    assert c.reward_opt_kwargs == c.G_opt_kwargs                                            # Its own Adam at glr.
    assert 'reward_opt_kwargs' not in config(recipe_args(files, tmp_path, '--reward-optimizer', 'shared'))


@pytest.mark.parametrize('extra, path, expected', [
    (['--gamma', '5'],                   'loss_kwargs.r1_gamma',                 5),
    (['--batch', '32'],                  'batch_size',                           32),
    (['--batch-gpu', '4', '--mbstd-group', '4'], 'D_kwargs.epilogue_kwargs.mbstd_group_size', 4),
    (['--kimg', '2050'],                 'total_kimg',                           2050),
    (['--resume-kimg', '0'],             'resume_kimg',                          0),
    (['--glr', '0.0005'],                'G_opt_kwargs.lr',                      0.0005),
    (['--lambda-r', '1'],                'loss_kwargs.reward_kwargs.lambda_r',   1),
    (['--sigma-grid', '32'],             'loss_kwargs.reward_kwargs.sigma_grid', 32),
    (['--sigma-reduce', 'mean'],         'loss_kwargs.reward_kwargs.sigma_reduce', 'mean'),
    (['--sigma-psi', '1'],               'loss_kwargs.reward_kwargs.sigma_psi',  1),
    (['--reward-psi', '0.5'],            'loss_kwargs.reward_kwargs.reward_psi', 0.5),
    (['--panel-seeds', '5-9'],           'panel_kwargs.seeds',                   '5-9'),
    (['--panel-seeds', 'none'],          'panel_kwargs',                         None),
    (['--metrics-ticks', '5'],           'metrics_ticks',                        5),
    (['--metrics', 'fid4_partial'],      'metrics_kwargs.metrics',               ['fid4_partial']),
])
def test_an_explicit_flag_overrides_the_recipe(files, tmp_path, extra, path, expected):
    c = config(recipe_args(files, tmp_path, *extra))
    assert at(c, path) == expected
    assert c.loss_kwargs.r1_gamma == (5 if '--gamma' in extra else 20)       # The rest of the recipe stays.


def test_metrics_none_turns_the_recipes_metrics_off_without_a_feature_network(files, tmp_path):
    c = config(recipe_args(files, tmp_path, '--metrics', 'none', drop=['--inception']))
    assert 'metrics_kwargs' not in c and c.loss_kwargs.reward_kwargs.sigma_grid == 64


def test_dry_run_prints_the_options_and_the_run_writes_them(files, tmp_path):
    # A pickle of the networks these options build (narrow, so the test stays small).
    c = config(recipe_args(files, tmp_path, '--cbase', '1024', '--cmax', '32'))
    training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
    G, D, G_ema = training_loop.build_networks(training_set, c.G_kwargs, c.D_kwargs, 'cpu')
    pkl = str(files.root / 'G.pkl')
    legacy.save_network_pkl(pkl, dict(G=G, D=D, G_ema=G_ema))
    args = recipe_args(files, tmp_path / 'runs', '--cbase', '1024', '--cmax', '32', '--dry-run')
    args[args.index('--resume') + 1] = pkl
    result = CliRunner().invoke(train.main, args)
    assert result.exit_code == 0, result.output[-2000:]
    printed = json.loads(result.output.split('Training options:')[1].split('Output directory:')[0])
    assert printed['loss_kwargs']['reward_kwargs']['sigma_grid'] == 64 and printed['batch_size'] == 16
    assert printed['resume_kimg'] == 2048 and printed['metrics_kwargs']['metrics'] == ['fid1k_partial']
    assert 'Dry run; exiting.' in result.output and not os.path.exists(tmp_path / 'runs')

    c.run_dir = str(tmp_path / 'run')
    gan_run.create_run_dir(c)                                   # What a real run writes first.
    written = json.load(open(tmp_path / 'run' / 'training_options.json'))
    assert written['loss_kwargs']['reward_kwargs']['sigma_psi'] == 0.7 and written['panel_kwargs']['truncation_psi'] == 1.0


@pytest.mark.parametrize('extra, drop, message', [
    (['--cfg', 'synthetic'], [], '--recipe=paper is a --cfg=ffhq run; --cfg=synthetic contradicts it'),
    (['--reward', 'depth'], [], '--reward=depth contradicts it'),
    (['--reward-model', demo.reward_model('depth')], [], 'reward-depth-nose.safetensors is a depth reward'),
    ([], ['--reward-model'], 'pass --reward-model'),
    ([], ['--inception'], '(--metrics=none turns the recipe\'s off)'),
    ([], ['--resume'], 'pass --resume'),
    (['--sigma-box-points', '100'], [], '--sigma-grid already covers the whole box'),
    (['--sigma-grid', '1'], [], '--sigma-grid=1'),
    (['--sigma-reduce', 'max'], [], "'max' is not one of 'mean', 'sum'"),
    (['--generator', 'flow'], [], 'is an EG3D option: add --generator=eg3d; --generator=flow takes'),
])
def test_contradictions_are_refused_in_one_line(files, tmp_path, extra, drop, message):
    result = CliRunner().invoke(train.main, recipe_args(files, tmp_path, *extra, '--dry-run', drop=drop))
    assert result.exit_code == 2, result.output
    assert message in result.output and 'Traceback' not in result.output
    assert not os.listdir(tmp_path)

#----------------------------------------------------------------------------
