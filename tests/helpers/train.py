"""train.py on a tiny EG3D-format dataset: the zip builder, the short synthetic command line, run folders, options."""

import io
import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
from click.testing import CliRunner

import train
from eg3d_rlhf.finetune import gan_run
from training.camera_utils import orbit_camera_label

#----------------------------------------------------------------------------
# A tiny EG3D-format dataset: 64x64 PNGs in a zip with dataset.json holding FFHQ-like 25-float camera labels.

def make_zip_dataset(path, count=8, resolution=64, seed=0):
    """`count` seeded images (smooth ramps plus noise) with orbit camera labels near frontal, zipped at `path`."""
    rnd = np.random.RandomState(seed)
    rendering = dict(avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])
    labels = []
    with zipfile.ZipFile(path, 'w') as z:
        for i in range(count):
            yy, xx = np.mgrid[:resolution, :resolution] / resolution
            image = np.stack([xx, yy, rnd.rand(resolution, resolution) * 0.3], axis=-1) * 255 # Smooth ramps plus noise.
            buf = io.BytesIO()
            PIL.Image.fromarray(image.astype(np.uint8)).save(buf, format='png')
            name = f'{i:05d}/img{i:08d}.png'
            z.writestr(name, buf.getvalue())
            c = orbit_camera_label(rendering, yaw=math.pi / 2 + rnd.uniform(-0.4, 0.4), pitch=math.pi / 2 + rnd.uniform(-0.2, 0.2))
            labels.append([name, c[0].tolist()])
        z.writestr('dataset.json', json.dumps({'labels': labels}))
    return str(path)

#----------------------------------------------------------------------------
# Command lines and run folders.

# Networks a quarter of the synthetic preset's width (its layout otherwise): a tiny run's steps, grids and panel cost
# about three quarters as much. The `start_pkl` fixture is built with them; a run resuming it passes them too.
TINY_NETS = ['--cbase', '1024', '--cmax', '32']
TRAIN_ARGS = ['--batch', '2', '--batch-gpu', '2', '--mbstd-group', '2', '--workers', '0', '--snap', '1', '--seed', '1',
    *TINY_NETS]


def base_args(data, outdir='unused', *extra):
    """train.py's command line for the synthetic preset on CPU, batch 4, plus `extra`."""
    return ['--outdir', str(outdir), '--cfg', 'synthetic', '--data', data, '--gpus', '1', '--batch', '4', '--gamma', '1',
        '--device', 'cpu', *extra]


def train_script(args, cwd, expect=0):
    """Run train.py as a child process in `cwd`; assert its exit status is `expect` and return the result."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'train.py')
    result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == expect, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def run_train(args):
    """Run train.py in-process; assert it succeeded and return its output."""
    result = CliRunner().invoke(train.main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    return result.output


def only_run_dir(outdir):
    """The newest run folder in `outdir` (asserting there is one)."""
    runs = sorted(os.listdir(outdir))
    assert len(runs) >= 1
    return os.path.join(outdir, runs[-1])

#----------------------------------------------------------------------------
# Training options.

def config_of(args):
    """The training options train.py builds for a command line, with its explicitly given options."""
    ctx = train.main.make_context('train.py', list(args))
    return gan_run.make_config(ctx.params, train.explicit_options(ctx))[0]


def lookup(c, path):
    """c's value at dotted `path` ('loss_kwargs.gamma'), or None when a key is missing."""
    for key in path.split('.'):
        if key not in c:
            return None
        c = c[key]
    return c

#----------------------------------------------------------------------------
