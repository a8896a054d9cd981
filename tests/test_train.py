"""train.py and the training loop: options of every flag, a short synthetic run, resume, and 2-process gloo training."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import train
from eg3d_rlhf.finetune import gan_run
from eg3d_rlhf.finetune import run_dir
from tests.conftest import REPO, shared_file
from tests.helpers.train import TINY_NETS, TRAIN_ARGS, base_args, lookup, make_zip_dataset, only_run_dir, run_train
from torch_utils import misc
from torch_utils.ops import conv2d_gradfix
from training import distributed
from training import legacy
from training import training_loop
from training.superresolution_small import SuperresolutionSmall2X

#----------------------------------------------------------------------------
# The training options of a command line (the tiny dataset, command lines and run folders: tests/helpers/train.py).

def config(args):
    """The training options train.py builds for a command line."""
    ctx = train.main.make_context('train.py', list(args))
    return gan_run.make_config(ctx.params)[0]

#----------------------------------------------------------------------------
# Every flag ends up in the training options.

FLAG_CASES = [
    # (extra arguments, path in the options, expected value)
    (['--gpus', '2', '--mbstd-group', '2'],     'num_gpus',                                         2),
    (['--gpus', '2', '--mbstd-group', '2'],     'batch_gpu',                                        2),
    (['--batch', '8'],                          'batch_size',                                       8),
    (['--batch', '8'],                          'ema_kimg',                                         8 * 10 / 32),
    (['--gamma', '0.3'],                        'loss_kwargs.r1_gamma',                             0.3),
    (['--mirror', 'True'],                      'training_set_kwargs.xflip',                        True),
    (['--freezed', '2'],                        'D_kwargs.block_kwargs.freeze_layers',              2),
    (['--batch-gpu', '2', '--mbstd-group', '2'], 'batch_gpu',                                       2),
    (['--cbase', '1024'],                       'G_kwargs.channel_base',                            1024),
    (['--cbase', '1024'],                       'D_kwargs.channel_base',                            1024),
    (['--cbase', '1024'],                       'G_kwargs.sr_kwargs.channel_base',                  1024),
    (['--cmax', '32'],                          'G_kwargs.channel_max',                             32),
    (['--cmax', '32'],                          'D_kwargs.channel_max',                             32),
    (['--glr', '0.001'],                        'G_opt_kwargs.lr',                                  0.001),
    (['--dlr', '0.003'],                        'D_opt_kwargs.lr',                                  0.003),
    (['--map-depth', '3'],                      'G_kwargs.mapping_kwargs.num_layers',               3),
    (['--mbstd-group', '2'],                    'D_kwargs.epilogue_kwargs.mbstd_group_size',        2),
    (['--metrics', 'none'],                     'total_kimg',                                       25000),
    (['--kimg', '0.5'],                         'total_kimg',                                       0.5),
    (['--tick', '0.01'],                        'kimg_per_tick',                                    0.01),
    (['--snap', '3'],                           'image_snapshot_ticks',                             3),
    (['--snap', '3'],                           'network_snapshot_ticks',                           3),
    (['--seed', '7'],                           'random_seed',                                      7),
    (['--seed', '7'],                           'training_set_kwargs.random_seed',                  7),
    (['--nobench', 'True'],                     'cudnn_benchmark',                                  False),
    (['--workers', '0'],                        'data_loader_kwargs.num_workers',                   0),
    (['--workers', '0'],                        'data_loader_kwargs.prefetch_factor',               None),
    (['--device', 'cpu'],                       'device',                                           'cpu'),
    (['--neural_rendering_resolution_initial', '16'], 'loss_kwargs.neural_rendering_resolution_initial', 16),
    (['--neural_rendering_resolution_final', '64'],   'loss_kwargs.neural_rendering_resolution_final',   64),
    (['--neural_rendering_resolution_fade_kimg', '5'], 'loss_kwargs.neural_rendering_resolution_fade_kimg', 5),
    (['--blur_fade_kimg', '64'],                'loss_kwargs.blur_fade_kimg',                       4 * 64 / 32),
    (['--gen_pose_cond', 'True'],               'G_kwargs.rendering_kwargs.c_gen_conditioning_zero', False),
    (['--gen_pose_cond', 'True'],               'G_kwargs.rendering_kwargs.gpc_reg_prob',           0.5),
    (['--gen_pose_cond', 'True', '--gpc_reg_prob', '0.8'], 'loss_kwargs.gpc_reg_prob',             0.8),
    (['--gpc_reg_prob', '0.8'],                 'loss_kwargs.gpc_reg_prob',                         None),
    (['--gpc_reg_fade_kimg', '7'],              'loss_kwargs.gpc_reg_fade_kimg',                    7),
    (['--c-scale', '2'],                        'G_kwargs.rendering_kwargs.c_scale',                2),
    (['--disc_c_noise', '0.5'],                 'D_kwargs.disc_c_noise',                            0.5),
    (['--sr_noise_mode', 'random'],             'G_kwargs.rendering_kwargs.superresolution_noise_mode', 'random'),
    (['--sr_num_fp16_res', '2'],                'G_kwargs.sr_num_fp16_res',                         2),
    (['--g_num_fp16_res', '2'],                 'G_kwargs.num_fp16_res',                            2),
    (['--g_num_fp16_res', '2'],                 'G_kwargs.conv_clamp',                              256),
    (['--d_num_fp16_res', '2'],                 'D_kwargs.num_fp16_res',                            2),
    (['--d_num_fp16_res', '2'],                 'D_kwargs.conv_clamp',                              256),
    (['--style_mixing_prob', '0.9'],            'loss_kwargs.style_mixing_prob',                    0.9),
    (['--d-fakes', 'reuse'],                    'loss_kwargs.d_fakes',                              'reuse'),
    (['--sr-module', 'training.superresolution.SuperresolutionHybrid2X'], 'G_kwargs.rendering_kwargs.superresolution_module', 'training.superresolution.SuperresolutionHybrid2X'),
    (['--density_reg', '0.5'],                  'G_kwargs.rendering_kwargs.density_reg',            0.5),
    (['--density_reg', '0'],                    'G_reg_interval',                                   None),
    (['--density_reg_every', '8'],              'G_reg_interval',                                   8),
    (['--density_reg_p_dist', '0.01'],          'G_kwargs.rendering_kwargs.density_reg_p_dist',     0.01),
    (['--reg_type', 'monotonic-detach'],        'G_kwargs.rendering_kwargs.reg_type',               'monotonic-detach'),
    (['--decoder_lr_mul', '2'],                 'G_kwargs.rendering_kwargs.decoder_lr_mul',         2),
    (['--resume-kimg', '3'],                    'resume_kimg',                                      None), # Only with --resume.
    (['--shape-prior-steps', '5'],              'shape_prior_kwargs.steps',                         5),
]

# Cases whose value the default command line already has: the flag is accepted and leaves it so.
UNCHANGED = {('--metrics', 'total_kimg'), ('--device', 'device'), ('--gpc_reg_prob', 'loss_kwargs.gpc_reg_prob'),
    ('--resume-kimg', 'resume_kimg')}


def test_cpu_bf16_flag(data, monkeypatch):
    # on/off are taken as given on a CPU; auto asks the CPU.
    assert config(base_args(data, 'unused', '--cpu-bf16', 'on')).cpu_bfloat16 is True
    assert config(base_args(data, 'unused', '--cpu-bf16', 'off')).cpu_bfloat16 is False
    for native in (False, True):
        monkeypatch.setattr(conv2d_gradfix, 'native_bfloat16', lambda native=native: native)
        assert config(base_args(data, 'unused')).cpu_bfloat16 is native


@pytest.mark.parametrize('extra, path, expected', FLAG_CASES, ids=[f'{" ".join(a)}->{p}' for a, p, _ in FLAG_CASES])
def test_flag_reaches_training_options(data, extra, path, expected):
    if (extra[0], path) not in UNCHANGED:
        assert lookup(config(base_args(data)), path) != expected
    value = lookup(config(base_args(data, 'unused', *extra)), path)
    assert value == pytest.approx(expected) if isinstance(expected, float) else value == expected


def test_synthetic_preset_defaults(data):
    c = config(base_args(data))
    assert c.G_kwargs.class_name == 'training.triplane.TriPlaneGenerator'
    assert c.D_kwargs.class_name == 'training.dual_discriminator.DualDiscriminator'
    assert c.G_kwargs.plane_resolution == 64
    assert c.G_kwargs.rendering_kwargs.superresolution_module == 'training.superresolution_small.SuperresolutionSmall2X'
    assert c.G_kwargs.rendering_kwargs.image_resolution == 64
    assert (c.G_kwargs.channel_base, c.G_kwargs.channel_max) == (4096, 128)
    assert c.loss_kwargs.neural_rendering_resolution_initial == 32
    assert c.loss_kwargs.dual_discrimination and c.loss_kwargs.blur_init_sigma == 10
    assert c.G_reg_interval == 4 and 'D_reg_interval' not in c # The loop's default (16).
    assert c.training_set_kwargs == dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True,
        max_size=8, xflip=False, resolution=64, random_seed=0)


@pytest.mark.parametrize('cfg, key, expected', [
    ('ffhq', 'avg_camera_pivot', [0, 0, 0.2]),
    ('ffhq', 'depth_resolution', 48),
    ('afhq', 'avg_camera_pivot', [0, 0, -0.06]),
    ('shapenet', 'box_warp', 1.6),
    ('shapenet', 'white_back', True),
    ('synthetic', 'white_back', True),
    ('shapenet', 'ray_start', 0.1),
    ('synthetic', 'depth_resolution_importance', 24),
])
def test_cfg_presets_use_eg3d_rendering_values(data, cfg, key, expected):
    args = base_args(data)
    args[args.index('--cfg') + 1] = cfg
    c = config(args)
    assert c.G_kwargs.rendering_kwargs[key] == expected
    if cfg != 'synthetic': # EG3D's own presets keep EG3D's networks exactly.
        assert 'plane_resolution' not in c.G_kwargs and c.G_kwargs.channel_base == 32768 and c.D_kwargs.conv_clamp == 256


def test_ffhq_preset_builds_the_released_ffhq512_networks(tmp_path):
    # EG3D's FFHQ-512 recipe (--cfg=ffhq --gen_pose_cond=True on 512x512 data) gives the released pickle's init kwargs.
    with open(shared_file('eg3d_reference', 'ffhq512_param_spec.json')) as f:
        spec = json.load(f)['ffhq512']
    data512 = make_zip_dataset(tmp_path / 'ffhq512.zip', count=2, resolution=512)
    args = base_args(data512, tmp_path, '--gen_pose_cond', 'True')
    args[args.index('--cfg') + 1] = 'ffhq'
    c = config(args)
    common = dict(c_dim=25, img_resolution=512, img_channels=3)
    assert {k: v for k, v in c.G_kwargs.items() if k != 'class_name'} | common == spec['G_init_kwargs']
    assert {k: v for k, v in c.D_kwargs.items() if k != 'class_name'} | common == spec['D_init_kwargs']


def test_resume_options(data, tmp_path):
    args = base_args(data, tmp_path, '--resume', 'snap.pkl', '--trust-pickle', '--resume-kimg', '3')
    c = config(args)
    assert (c.resume_pkl, c.resume_kimg, c.trust_resume_pkl) == ('snap.pkl', 3, True)
    assert c.ema_rampup is None and c.loss_kwargs.blur_init_sigma == 0 and c.loss_kwargs.gpc_reg_fade_kimg == 0
    assert config(args + ['--resume_blur', 'True']).loss_kwargs.blur_init_sigma == 10


@pytest.mark.parametrize('extra, message', [
    (['--resume', 'snap.pkl'], '--trust-pickle'),
    (['--resume', 'snap.pkl', '--shape-prior-steps', '5'], 'cannot be combined with --resume'),
    (['--cond', 'False'], '--cond=False'),
    (['--aug', 'ada'], 'not implemented'),
    (['--metrics', 'fid50k_full'], '--metrics=fid50k_full needs --inception PATH'),
    (['--metrics', 'is50k'], "unknown metric 'is50k'"),
    (['--batch', '6', '--gpus', '4'], 'multiple of --gpus'),
    (['--batch-gpu', '3'], 'multiple of --gpus times --batch-gpu'),
    (['--batch-gpu', '2'], '--mbstd-group'),
    (['--data', '/nonexistent/heads.zip'], '--data'),
    (['--device', 'cuda'] if not torch.cuda.is_available() else ['--gpus', '999'], 'CUDA' if not torch.cuda.is_available() else '--gpus'),
])
def test_bad_options_fail_with_a_clear_message(data, tmp_path, extra, message):
    args = base_args(data, tmp_path)
    for flag, value in zip(extra[::2], extra[1::2]): # Replace a base flag, or append it.
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    result = CliRunner().invoke(train.main, args + ['--dry-run'])
    assert result.exit_code != 0
    assert message in result.output
    assert not os.path.exists(tmp_path / '00000-synthetic-heads64-gpus1-batch4-gamma1')


def test_dry_run_prints_options_and_creates_nothing(data, tmp_path):
    outdir = tmp_path / 'runs'
    output = run_train(base_args(data, outdir, '--desc', 'try', '--dry-run'))
    printed = json.loads(output.split('Training options:')[1].split('Output directory:')[0])
    expected = json.loads(json.dumps(config(base_args(data, outdir, '--desc', 'try'))))
    assert printed == dict(expected, run_dir=str(outdir / '00000-synthetic-heads64-gpus1-batch4-gamma1-try'))
    assert 'Dry run; exiting.' in output
    assert not outdir.exists()


def test_the_next_command_evaluates_the_last_snapshot(tmp_path):
    c = dnnlib.EasyDict(run_dir=str(tmp_path), resume_pkl=gan_run.registry.bundled_file('bundled'),
        panel_kwargs=dict(reward_model_path=gan_run.demo.reward_model('sigma')))
    assert gan_run.next_command(c) is None                                  # No snapshot yet.
    for name in ('network-snapshot-000000.pkl', 'network-snapshot-000004.pkl', 'reals.png'):
        (tmp_path / name).write_bytes(b'')
    command = gan_run.next_command(c)
    assert command.startswith('python tools/evaluate.py --original bundled --tuned ' + str(tmp_path / 'network-snapshot-000004.pkl'))
    assert '--reward-model checkpoints/reward-sigma-nose.safetensors' in command and '--annotator oracle:nose' in command
    assert gan_run.next_command(dnnlib.EasyDict(c, panel_kwargs=None)) is None   # No reward phase: nothing to compare.
    other = gan_run.next_command(dnnlib.EasyDict(c, resume_pkl='my net.pkl'))
    assert "--original 'my net.pkl'" in other


def test_run_dirs_count_up(tmp_path):
    assert run_dir.next_run_dir(str(tmp_path), 'a') == str(tmp_path / '00000-a')
    os.makedirs(tmp_path / '00007-old')
    os.makedirs(tmp_path / 'notes')
    assert run_dir.next_run_dir(str(tmp_path), 'b') == str(tmp_path / '00008-b')

#----------------------------------------------------------------------------
# Pieces of the loop.

def test_lazy_regularisation_rescales_adam():
    G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8) # EG3D's values (an int beta).
    phases = training_loop.build_phases(G, D, opt, opt, G_reg_interval=4, D_reg_interval=16)
    assert [(p.name, p.interval) for p in phases] == [('Gmain', 1), ('Greg', 4), ('Dmain', 1), ('Dreg', 16)]
    assert phases[0].opt is phases[1].opt and phases[2].opt is phases[3].opt
    g, d = phases[0].opt.param_groups[0], phases[2].opt.param_groups[0]
    assert g['lr'] == pytest.approx(0.002 * 4 / 5) and g['betas'] == pytest.approx((0, 0.99 ** (4 / 5)))
    assert d['lr'] == pytest.approx(0.002 * 16 / 17) and d['betas'] == pytest.approx((0, 0.99 ** (16 / 17)))
    phases = training_loop.build_phases(G, D, opt, opt, G_reg_interval=None, D_reg_interval=16)
    assert [p.name for p in phases] == ['Gboth', 'Dmain', 'Dreg'] and phases[0].opt.param_groups[0]['lr'] == 0.002


def test_ema_update_half_life_and_rampup():
    torch.manual_seed(0)
    G = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        G.weight.copy_(torch.randn(3))
        G.running_mean.copy_(torch.randn(3))
    G.neural_rendering_resolution, G.rendering_kwargs = 48, dict(box_warp=1)
    G_ema = torch.nn.BatchNorm1d(3)
    before = G_ema.weight.detach().clone()
    # ema_kimg * 1000 == batch_size: beta = 0.5, the average moves halfway.
    training_loop.update_ema(G_ema, G, cur_nimg=10**6, batch_size=4, ema_kimg=0.004, ema_rampup=None)
    assert torch.allclose(G_ema.weight, (before + G.weight) / 2)
    assert torch.equal(G_ema.running_mean, G.running_mean) # Buffers are copied.
    assert G_ema.neural_rendering_resolution == 48 and G_ema.rendering_kwargs == G.rendering_kwargs
    # At the start of training the ramp-up makes G_ema a copy of G.
    training_loop.update_ema(G_ema, G, cur_nimg=0, batch_size=4, ema_kimg=10, ema_rampup=0.05)
    assert torch.equal(G_ema.weight, G.weight)


def test_gradient_sync_scrubs_nan_and_inf():
    net = torch.nn.Linear(3, 2)
    net.weight.grad = torch.tensor([[float('nan'), 1, float('inf')], [-float('inf'), 2, 3]])
    distributed.sync_gradients(net, num_gpus=1)
    assert torch.equal(net.weight.grad, torch.tensor([[0, 1, 1e5], [-1e5, 2, 3]]))
    assert net.bias.grad is None


def test_infinite_sampler_splits_one_stream_between_ranks():
    dataset = list(range(10))
    def take(sampler, n):
        it = iter(sampler)
        return [int(next(it)) for _ in range(n)]
    stream = take(distributed.InfiniteSampler(dataset, seed=3), 40)
    assert set(stream) == set(dataset)
    assert stream[10:20] != stream[:10] # The order keeps changing (no epochs).
    assert take(distributed.InfiniteSampler(dataset, seed=3), 40) == stream
    assert take(distributed.InfiniteSampler(dataset, rank=0, num_replicas=2, seed=3), 20) == stream[0::2]
    assert take(distributed.InfiniteSampler(dataset, rank=1, num_replicas=2, seed=3), 20) == stream[1::2]


def test_image_grid_layout(tmp_path):
    img = np.zeros([6, 3, 2, 4], dtype=np.float32) # 6 images, 3x2 grid of 4x2-pixel tiles.
    for i in range(6):
        img[i] = i / 5
    training_loop.save_image_grid(img, tmp_path / 'g.png', drange=[0, 1], grid_size=(3, 2))
    out = np.array(PIL.Image.open(tmp_path / 'g.png'))
    assert out.shape == (4, 12, 3)
    for i in range(6):
        row, col = divmod(i, 3)
        assert (out[row * 2:(row + 1) * 2, col * 4:(col + 1) * 4] == round(i / 5 * 255)).all()


def test_snapshot_grid_rows_are_poses(data):
    dataset = dnnlib.util.construct_class_by_name(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True)
    (gw, gh), images, labels = training_loop.setup_snapshot_image_grid(dataset, max_grid=(4, 3))
    assert (gw, gh) == (4, 3) and images.shape == (12, 3, 64, 64) and labels.shape == (12, 25)
    rows = labels.reshape(gh, gw, 25)
    assert all((rows[y] == rows[y, 0]).all() for y in range(gh)) # One camera per row...
    assert len({rows[y, 0].tobytes() for y in range(gh)}) == gh # ...a different one on each row.


def test_conv2d_gradfix_weight_gradient_without_input_gradient():
    # The training loop enables the custom op; D's first layer sees images that need no gradient.
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3, requires_grad=True)
    ref, = torch.autograd.grad(torch.nn.functional.conv2d(x, w, padding=1).square().sum(), w)
    enabled, conv2d_gradfix.enabled = conv2d_gradfix.enabled, True
    try:
        got, = torch.autograd.grad(conv2d_gradfix.conv2d(x, w, padding=1).square().sum(), w)
    finally:
        conv2d_gradfix.enabled = enabled
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_small_superresolution_head_leaves_its_input_alone():
    torch.manual_seed(0)
    sr = SuperresolutionSmall2X(channels=32, img_resolution=64, sr_num_fp16_res=0, sr_antialias=True)
    feat = torch.randn(2, 32, 32, 32, requires_grad=True)
    rgb = feat[:, :3]
    before = rgb.detach().clone()
    out = sr(rgb, feat, torch.randn(2, 6, 512), noise_mode='const')
    assert out.shape == (2, 3, 64, 64)
    assert torch.equal(rgb.detach(), before)
    out.square().mean().backward() # EG3D's in-place add would break this fp32 backward pass.
    assert feat.grad.abs().sum() > 0

#----------------------------------------------------------------------------
# Training through train.py, snapshots and resume.

def _state(module):
    return {name: t.detach().clone() for name, t in misc.named_params_and_buffers(module)}


def assert_same_weights(a, b, skip=()):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for name in sa:
        if name not in skip:
            assert torch.equal(sa[name], sb[name]), name


@pytest.fixture(scope='module')
def trained_run(data, tmp_path_factory):
    """Two training steps of the synthetic preset (ticks after each); returns (run_dir, output)."""
    outdir = tmp_path_factory.mktemp('runs')
    output = run_train(base_args(data, outdir, *TRAIN_ARGS, '--kimg', '0.004', '--tick', '0.002'))
    return only_run_dir(outdir), output


def test_training_writes_options_stats_grids_and_snapshot(trained_run):
    run_dir, output = trained_run
    status = re.findall(r'^tick (\d+) +kimg ([\d.]+) +time .* sec/kimg ([\d.]+) .* augment 0.000$', output, flags=re.M)
    assert [s[0] for s in status] == ['0', '1'] and all(float(s[2]) > 0 for s in status)
    with open(os.path.join(run_dir, 'training_options.json')) as f:
        options = json.load(f)
    assert options['total_kimg'] == 0.004 and options['batch_size'] == 2 and options['run_dir'] == run_dir
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        stats = [json.loads(line) for line in f]
    assert len(stats) == 2
    assert stats[1]['Progress/kimg']['mean'] == pytest.approx(0.004)
    for key in ('Loss/G/loss', 'Loss/D/loss', 'Loss/scores/real', 'Timing/sec_per_kimg', 'Timing/Gmain', 'Timing/Dmain'):
        assert np.isfinite(stats[1][key]['mean']), key
    assert {'Timing/Greg', 'Loss/G/density_reg', 'Loss/r1_penalty'} <= set(stats[0]) # Step 0 runs every phase.
    assert 'sec/kimg' in open(os.path.join(run_dir, 'log.txt')).read()
    before = output[:output.index('\ntick 0 ')].splitlines()                # A quiet start: no layer tables.
    assert len(before) < 40 and 'training_options.json (--verbose prints them' in output and 'Parameters' not in output

    sizes = {'reals.png': (256, 256), 'fakes000000.png': (256, 256), 'fakes000000_raw.png': (128, 128), 'fakes000000_depth.png': (128, 128)}
    for name, size in sizes.items():
        with PIL.Image.open(os.path.join(run_dir, name)) as im:
            assert im.size == size, name
            assert im.mode == ('L' if 'depth' in name else 'RGB')

    snap = legacy.load_network_pkl(os.path.join(run_dir, 'network-snapshot-000000.pkl'), trust=True)
    assert set(snap) == {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', 'progress', 'resume_state'}
    assert snap['progress'] == dict(kimg=0.004, tick=1)                     # Where a resume continues from.
    assert snap['augment_pipe'] is None and snap['training_set_kwargs'] == options['training_set_kwargs']
    assert type(snap['G']).__name__ == 'TriPlaneGenerator' and type(snap['D']).__name__ == 'DualDiscriminator'
    assert not snap['G_ema'].training and snap['G'].init_kwargs['plane_resolution'] == 64
    # Two Adam steps moved G away from G_ema (which starts as G's copy and then averages).
    assert any(not torch.equal(p, q) for p, q in zip(snap['G'].parameters(), snap['G_ema'].parameters()))


def test_shape_prior_runs_before_training_and_reaches_g_ema(data, tmp_path):
    output = run_train(base_args(data, tmp_path, *TRAIN_ARGS, '--kimg', '0.002', '--tick', '0.002', '--glr', '0',
        '--shape-prior-steps', '2'))
    errors = re.search(r'Shape prior: loss ([\d.]+) -> ([\d.]+)', output)
    assert errors is not None and float(errors.group(1)) > 0
    assert output.index('Fitting the shape prior for 2 steps') < output.index('Training for 0.002 kimg')
    snap = legacy.load_network_pkl(os.path.join(only_run_dir(tmp_path), 'network-snapshot-000000.pkl'), trust=True)
    fresh, _, _ = _fresh_networks(only_run_dir(tmp_path))
    # With --glr=0 training leaves G alone, so only the prior can have moved G_ema away from a fresh G.
    decoder = lambda G: torch.cat([p.flatten() for p in G.decoder.parameters()])
    assert (decoder(snap['G_ema']) - decoder(fresh)).abs().max() > 1e-3


def test_cpu_bf16_convolves_the_training_steps_only(data, tmp_path, monkeypatch):
    seen, real = [], conv2d_gradfix._low
    monkeypatch.setattr(conv2d_gradfix, '_low', lambda *tensors: seen.append(real(*tensors)[1]) or real(*tensors))
    run_train(base_args(data, tmp_path, *TRAIN_ARGS, '--kimg', '0.002', '--tick', '0.002', '--cpu-bf16', 'on'))
    with open(os.path.join(only_run_dir(tmp_path), 'training_options.json'), encoding='utf-8') as f:
        assert json.load(f)['cpu_bfloat16'] is True
    assert True in seen and False in seen              # The phases in bfloat16; the sample grids of G_ema in float32.
    assert not conv2d_gradfix.cpu_bfloat16


def test_shape_prior_is_called_by_name_with_the_options_it_takes(data):
    import inspect
    kwargs = dict(config(base_args(data, 'unused', '--shape-prior-steps', '3')).shape_prior_kwargs)
    func = dnnlib.util.get_obj_by_name(kwargs.pop('func_name'))
    inspect.signature(func).bind(G=None, labels=None, batch=4, seed=0, **kwargs)     # What the training loop passes.
    assert kwargs == dict(steps=3) and 'shape_prior_kwargs' not in config(base_args(data))


def test_training_package_runs_without_eg3d_rlhf():
    # training/ is EG3D: the extra phases, the panel and the shape prior come by name from its options.
    code = ('import sys\n'
            'import training.loss, training.training_loop, training.presets, training.legacy, training.dual_discriminator\n'
            'print(sorted(m for m in sys.modules if m.split(".")[0] == "eg3d_rlhf"))')
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == '[]', result.stdout + result.stderr


def _fresh_networks(run_dir):
    with open(os.path.join(run_dir, 'training_options.json')) as f:
        c = dnnlib.EasyDict(json.load(f))
    dataset = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
    return training_loop.build_networks(dataset, c.G_kwargs, c.D_kwargs, torch.device('cpu'))


def test_resume_copies_every_weight_of_our_snapshot(trained_run):
    run_dir, _ = trained_run
    pkl = os.path.join(run_dir, 'network-snapshot-000000.pkl')
    snap = legacy.load_network_pkl(pkl, trust=True)
    G, D, G_ema = _fresh_networks(run_dir)
    with pytest.raises(legacy.UntrustedPickleError):
        training_loop.resume_networks(pkl, dict(G=G, D=D, G_ema=G_ema))
    training_loop.resume_networks(pkl, dict(G=G, D=D, G_ema=G_ema), trust=True)
    for name, net in [('G', G), ('D', D), ('G_ema', G_ema)]:
        assert_same_weights(net, snap[name])


def test_resume_through_train_py_with_zero_learning_rate_keeps_the_weights(data, trained_run, tmp_path):
    run_dir, _ = trained_run
    pkl = os.path.join(run_dir, 'network-snapshot-000000.pkl')
    output = run_train(base_args(data, tmp_path, *TRAIN_ARGS, '--resume', pkl, '--trust-pickle', '--resume-kimg', '2',
        '--kimg', '2.002', '--glr', '0', '--dlr', '0'))
    assert f'Resuming from "{pkl}"' in output
    assert re.search(r'^tick 0 +kimg 2.0 ', output, flags=re.M)
    new_run = only_run_dir(tmp_path)
    before = legacy.load_network_pkl(pkl, trust=True)
    after = legacy.load_network_pkl(os.path.join(new_run, 'network-snapshot-000002.pkl'), trust=True)
    assert_same_weights(after['D'], before['D'])
    assert_same_weights(after['G'], before['G'], skip=('backbone.mapping.w_avg',)) # w_avg tracks the latest ws.


def test_resume_from_an_eg3d_format_pickle(data, trained_run, tmp_path):
    # A network pickle as EG3D writes it: a dict of independently initialised networks of the same structure.
    run_dir, _ = trained_run
    torch.manual_seed(123)
    G, D, G_ema = _fresh_networks(run_dir)
    pkl = str(tmp_path / 'eg3d-format.pkl')
    legacy.save_network_pkl(pkl, dict(G=G, D=D, G_ema=G_ema, augment_pipe=None, training_set_kwargs={}))
    torch.manual_seed(0)
    nets = dict(zip(['G', 'D', 'G_ema'], _fresh_networks(run_dir)))
    assert any(not torch.equal(a, b) for a, b in zip(nets['G'].parameters(), G.parameters()))
    training_loop.resume_networks(pkl, nets, trust=True)
    for name, net in [('G', G), ('D', D), ('G_ema', G_ema)]:
        assert_same_weights(nets[name], net)
    output = run_train(base_args(data, tmp_path / 'runs', *TRAIN_ARGS, '--resume', pkl, '--trust-pickle', '--kimg', '0.002'))
    assert 'Resuming from' in output and re.search(r'^tick 0 ', output, flags=re.M)

#----------------------------------------------------------------------------
# Two gloo processes train in lockstep.

def _train_rank(rank, c, outdir):
    nets = training_loop.training_loop(rank=rank, local_rank=rank, **c)
    torch.save({name: _state(net) for name, net in nets.items()}, os.path.join(outdir, f'rank{rank}.pt'))


def test_two_gloo_processes_hold_identical_weights(data, tmp_path):
    c = config(base_args(data, tmp_path, *TINY_NETS, '--gpus', '2', '--batch', '4', '--mbstd-group', '2', '--workers', '0',
        '--kimg', '0.012', '--tick', '0.004', '--snap', '100'))
    assert c.num_gpus == 2 and c.batch_gpu == 2
    c.run_dir = str(tmp_path)
    c.image_snapshot_ticks = None # Grids are rank 0's business; skip them here.
    distributed.spawn(_train_rank, num_processes=2, device_type='cpu', args=(c, str(tmp_path)))
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in range(2)]
    for name in ('G', 'D', 'G_ema'):
        assert ranks[0][name].keys() == ranks[1][name].keys()
        for key in ranks[0][name]:
            if not re.fullmatch(r'.*\.[^.]+_(avg|ema)', key): # Running averages of w stay per rank, as in EG3D.
                assert torch.equal(ranks[0][name][key], ranks[1][name][key]), f'{name}.{key}'
    assert os.path.exists(tmp_path / 'network-snapshot-000000.pkl') # Written after every rank passed the consistency check.

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_train_py_spawns_gloo_processes_on_cpu(data, tmp_path):
    output = run_train(base_args(data, tmp_path, *TINY_NETS, '--gpus', '2', '--mbstd-group', '2', '--workers', '0',
        '--kimg', '0.004'))
    assert 'Number of processes: 2' in output
    run_dir = only_run_dir(tmp_path)
    assert os.path.exists(os.path.join(run_dir, 'network-snapshot-000000.pkl')) # Every rank passed the consistency check.
    assert re.search(r'^tick 0 .* sec/kimg', open(os.path.join(run_dir, 'log.txt')).read(), flags=re.M)


@pytest.mark.slow
def test_torchrun_launch_trains_two_consistent_processes(data, tmp_path):
    # torchrun's env:// rendezvous: rank 0 picks the run directory and shares it; the snapshot is written only after
    # every rank has checked its weights against rank 0's.
    args = base_args(data, tmp_path, *TINY_NETS, '--gpus', '2', '--mbstd-group', '2', '--workers', '0', '--kimg', '0.008',
        '--tick', '0.004')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
        os.path.join(REPO, 'train.py'), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(re.findall(r'^tick \d+ ', result.stdout, flags=re.M)) == 2 # Printed by rank 0 only.
    run_dir = only_run_dir(tmp_path)
    assert len(os.listdir(tmp_path)) == 1
    assert os.path.exists(os.path.join(run_dir, 'network-snapshot-000000.pkl'))
    with open(os.path.join(run_dir, 'training_options.json')) as f:
        assert json.load(f)['num_gpus'] == 2
    assert 'sec/kimg' in open(os.path.join(run_dir, 'log.txt')).read()

#----------------------------------------------------------------------------
