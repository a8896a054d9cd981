"""The embedded reward fine-tuning demo: bundled generator and reward models, a cached synthetic dataset, CPU settings."""

import os

#----------------------------------------------------------------------------
# Everything `python train.py --reward=sigma --lambda-r=10` needs besides the flags: checkpoints/README.md says how
# each bundled file was made.

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKPOINTS = os.path.join(ROOT, 'checkpoints')
GENERATOR = os.path.join(CHECKPOINTS, 'synthetic-heads64.pkl')
FLOW_GENERATOR = os.path.join(CHECKPOINTS, 'flow-heads.safetensors')
FLOW_TASTES = ('proportions', 'nose')      # Tastes of the Circular-DPO demos, each with a bundled flow reward; the first is the default.


def flow_reward(annotator):
    """The bundled flow reward model trained on the simulated annotator `annotator` ('oracle:TASTE'), or None."""
    taste = annotator.partition(':')[2]
    return os.path.join(CHECKPOINTS, f'reward-sigma-flow-{taste}.safetensors') if taste in FLOW_TASTES else None


FLOW_REWARD = flow_reward('oracle:' + FLOW_TASTES[0])       # The default demo's reward.


def reward_model(kind):
    """The bundled reward model of a kind ('sigma', 'depth' or 'pointcloud'), trained on oracle:nose labels."""
    return os.path.join(CHECKPOINTS, f'reward-{kind}-nose.safetensors')


# The first DATASET['count'] images of the bundled generator's training set (sample i depends only on (seed, i)).
DATASET = dict(count=256, resolution=64, seed=0, defect_rate=0.25)

# train.py's values for the demo; any of them given on the command line wins. The fine-tuning schedule is sized so
# the whole run, start-up and panel included, finishes in under ten minutes on a 2-core CPU (README.md, measured).
# Keys are train.py option names; the reward ones are fields of eg3d_rlhf.finetune.config.RewardFinetuneConfig, which
# checks them like flags and holds every default: only values that differ from those defaults belong here.
OPTIONS = dict(
    outdir       = 'training-runs',
    cfg          = 'synthetic',
    gpus         = 1,
    batch        = 4,
    gamma        = 1,
    mirror       = True,
    resume       = GENERATOR,
    kimg         = 0.4,
    tick         = 0.1,
    snap         = 4,
    glr          = 0.0002,
    dlr          = 0.0002,
    lambda_sigma = 10.0,
    reward_step  = 'gan',
    d_fakes      = 'reuse',
    workers      = 0,
    desc         = 'reward-demo',
)
# Why the demo's learning rates are lower and its density consistency stronger than train.py's defaults: with
# --lambda-r=0 the bundled generator must stay where it is, but after only 8 kimg of GAN training D soon tells its
# fakes from real heads again and the GAN phases keep changing G, noses included (README.md, "Reward fine-tuning",
# lists the control runs: at glr 0.0005 and lambda_sigma 0.01 the panel's mean reward fell 0.94 in 0.4 kimg).
# Why the reward term sits in G's GAN step (--reward-step=gan, the paper's loss): one backbone pass and one backward
# fewer a step, the same panel change within 4% (+3.38 against +3.50 as a phase of its own) and no taste worse
# (docs/results/2026-11-26-main-job-dev-notebook.md, "Measured on the 2-core CPU").
# Why D trains on the images G's GAN step rendered (--d-fakes=reuse): a generator pass fewer a step (Dmain 0.31 ->
# 0.19 s), D's fakes one G update older (lr 0.0002), the same panel change (+3.36 against +3.38 with fresh fakes).

# Options that, when none of them is given, make train.py --reward=... run the demo (--outdir may still be given).
REQUIRED = ('cfg', 'data', 'gpus', 'batch', 'gamma')


def cache_dir():
    """$EG3D_RLHF_CACHE, or ~/.cache/eg3d-rlhf."""
    return os.environ.get('EG3D_RLHF_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'eg3d-rlhf')


def _file_name():
    d = DATASET
    return f'synthetic-heads{d["resolution"]}-n{d["count"]}-seed{d["seed"]}.zip'


def dataset_path():
    return os.path.join(cache_dir(), _file_name())


def bundled_dataset():
    """The copy of the demo dataset that ships in checkpoints/ (checkpoints/README.md: the command that rendered it)."""
    return os.path.join(CHECKPOINTS, _file_name())


def dataset_problem(path=None):
    """Why the demo dataset at `path` (default: the cached one) cannot be used (one line: missing, truncated, not a
    zip, fails validation), or None when it can."""
    from training.dataset import DatasetError, ImageFolderDataset
    path = path or dataset_path()
    try:
        dataset = ImageFolderDataset(path, use_labels=True, resolution=DATASET['resolution'])
        dataset.check_camera_labels()
        count = len(dataset)
        dataset.close()
    except (OSError, DatasetError) as err:
        return str(err)
    return None if count == DATASET['count'] else f'{path} holds {count} images, not {DATASET["count"]}'


def ensure_dataset(log=print):
    """The demo dataset's path, putting it into the cache first if it is missing or damaged: a copy of the bundled
    one where it is sound, else a render (about a minute on 2 cores). Either replaces the cache only once complete,
    so a killed one leaves no half-written file behind."""
    path = dataset_path()
    cached = os.path.isfile(path)
    problem = dataset_problem() if cached else None
    if cached and problem is None:
        return path
    bundled = bundled_dataset()
    bundled = bundled if os.path.isfile(bundled) and dataset_problem(bundled) is None else None
    if cached:
        log(f'The cached demo dataset cannot be used ({problem}); ' + ('copying the bundled one' if bundled else
            'rendering it') + ' again...')
    else:
        log(('Copying the bundled' if bundled else 'Rendering the') + f' demo dataset ({DATASET["count"]} synthetic '
            f'heads) into {path} (first use only)...')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if bundled:
        import shutil # pylint: disable=import-outside-toplevel
        import dnnlib # pylint: disable=import-outside-toplevel
        with open(bundled, 'rb') as src, dnnlib.util.atomic_write(path) as dst:
            shutil.copyfileobj(src, dst)
        return path
    from eg3d_rlhf.synthetic import dataset_writer
    dataset_writer.write_dataset(path, **DATASET)
    return path

#----------------------------------------------------------------------------
