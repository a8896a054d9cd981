"""The `eg3d-rlhf` command (tools/__main__.py), the install that provides it, and README's set-up command."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'eg3d-rlhf')    # The console script `pip install -e .` made.

#----------------------------------------------------------------------------

def run(argv, cwd=REPO):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def listed_commands(help_text):
    """The names in the Commands section of a group's --help."""
    section = help_text[help_text.index('Commands:'):]
    return re.findall(r'^  ([a-z][a-z0-9-]*)\s', section, re.M)


@pytest.fixture(scope='module')
def script():
    assert os.path.isfile(SCRIPT), f'{SCRIPT} is missing: reinstall the package (pip install -e .) for the console script'
    return SCRIPT

#----------------------------------------------------------------------------

def test_help_lists_every_tool_and_train(script, tmp_path):
    tools = sorted(name[:-3].replace('_', '-') for name in os.listdir(os.path.join(REPO, 'tools'))
        if name.endswith('.py') and not name.startswith('_'))
    result = run([script, '--help'], cwd=tmp_path)      # From anywhere: the installed package, not the checkout.
    assert result.returncode == 0, result.stderr
    assert listed_commands(result.stdout) == sorted([*tools, 'train'])
    assert 'sample-bank' in tools and len(tools) >= 20
    unknown = run([script, 'no-such-tool'], cwd=tmp_path)
    assert unknown.returncode == 2 and "No such command 'no-such-tool'" in unknown.stderr


def test_a_tool_has_the_same_help_and_errors_as_its_script(script):
    """Byte for byte: the tool runs under its script's name, so even the usage line is the script's."""
    outputs = {}
    for args in (['--help'], ['--seeds', '0', '--no-such-flag']):
        ours = run([script, 'sample-bank', *args])
        theirs = run([sys.executable, 'tools/sample_bank.py', *args])
        assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr), args
        outputs[args[0]] = ours
    assert outputs['--help'].returncode == 0 and outputs['--help'].stdout.startswith('Usage: sample_bank.py [OPTIONS]')
    assert outputs['--seeds'].returncode == 2 and "No such option '--no-such-flag'" in outputs['--seeds'].stderr


def test_train_is_a_command_with_train_py_help(script):
    ours, theirs = run([script, 'train', '--help']), run([sys.executable, 'train.py', '--help'])
    assert ours.returncode == 0 and ours.stdout == theirs.stdout and '--save-config' in ours.stdout


def test_the_group_help_imports_no_tool():
    """`eg3d-rlhf --help` reads the tools' docstrings without importing them (each would import torch)."""
    code = ('import sys, tools.__main__ as m; m.group.main(["--help"], standalone_mode=False); '
        'print("LOADED", sorted(n for n in ("torch", "train", "tools.sample_bank") if n in sys.modules))')
    result = run([sys.executable, '-c', code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == 'LOADED []'
    assert 'sample-bank' in result.stdout and 'Build a sample bank' in result.stdout


def test_the_sampling_tools_import_no_heavy_library_they_do_not_use():
    """Extracting sigma or building and scoring a bank needs no statistics, meshing, plotting or attribution library:
    importing them would cost every run seconds before its first step (scipy.stats 0.5 s, mcubes 0.4 s; the reward
    models of other kinds: pytorch3dunet with scikit-image 0.25 s, scipy.sparse 0.2 s)."""
    heavy = ('scipy.stats', 'mcubes', 'matplotlib', 'captum', 'umap', 'scipy.sparse', 'pytorch3dunet', 'skimage')
    code = ('import sys, eg3d_rlhf.cli, tools.extract_sigma, tools.sample_bank, tools.score_bank; '
        f'print("LOADED", sorted(n for n in {heavy!r} if n in sys.modules))')
    result = run([sys.executable, '-c', code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == 'LOADED []'


def test_train_py_imports_no_statistics_meshing_or_plotting_library():
    """Importing train.py (all that `--help` or a refused flag runs: every method's config and runner) loads no scipy
    at all, scikit-image, plotting or logging library: they cost ~2 s of every start (scipy.stats 1 s); the runs
    import them where they use them."""
    heavy = ('scipy', 'skimage', 'matplotlib', 'tensorboard', 'captum', 'umap', 'mcubes', 'pytorch3dunet')
    code = f'import sys, train; print("LOADED", sorted(n for n in {heavy!r} if n in sys.modules))'
    result = run([sys.executable, '-c', code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == 'LOADED []'


def test_the_analysis_and_labeling_tools_load_their_statistics_and_captum_on_use():
    """attribute, embed, label and label_studio import captum (with matplotlib), scipy.stats and scipy.ndimage where a
    run uses them, so their --help, --dry-run and the label server start without them (attribute: 1.5 s)."""
    heavy = ('scipy.stats', 'scipy.ndimage', 'captum', 'matplotlib')
    code = ('import sys, tools.attribute, tools.embed, tools.label, tools.label_studio; '
        f'print("LOADED", sorted(n for n in {heavy!r} if n in sys.modules))')
    result = run([sys.executable, '-c', code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == 'LOADED []'


def test_meshing_loads_only_the_compiled_marching_cubes():
    """PyMCubes' package imports scipy.ndimage and scipy.sparse with its smoothing helpers (0.3 s); meshing loads its
    compiled module alone and gives the package's own mesh."""
    code = ('import sys, numpy as np; from eg3d_rlhf.geometry import mesh; '
        'g = np.linspace(-1, 1, 24); v = g[:, None, None] ** 2 + g[None, :, None] ** 2 + 2 * g[None, None, :] ** 2; '
        'ours = mesh.index_mesh(v, 0.5); '
        'print("LOADED", sorted(n for n in ("mcubes", "scipy.ndimage", "scipy.sparse") if n in sys.modules)); '
        'import mcubes; theirs = mcubes.marching_cubes(v, 0.5); '
        'print("SAME", len(ours[0]) > 100 and np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1]))')
    result = run([sys.executable, '-c', code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-2:] == ['LOADED []', 'SAME True']


def test_a_non_editable_install_ships_the_tools_and_train(tmp_path):
    """pip install (not -e) of a copy of the sources: tools/ and train.py come along and the command runs from them."""
    src = tmp_path / 'src'
    for name in ('dnnlib', 'torch_utils', 'training', 'eg3d_rlhf', 'tools'):
        shutil.copytree(os.path.join(REPO, name), src / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    for name in ('setup.py', 'train.py'):
        shutil.copy(os.path.join(REPO, name), src / name)
    target = tmp_path / 'site'
    result = run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation', '--no-index',
        '--target', str(target), str(src)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (target / 'train.py').is_file() and (target / 'tools' / 'sample_bank.py').is_file()
    env = dict(os.environ, PYTHONPATH=str(target))
    listing = subprocess.run([sys.executable, str(target / 'bin' / 'eg3d-rlhf'), '--help'], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300, check=False)
    assert 'sample-bank' in listed_commands(listing.stdout) and 'train' in listed_commands(listing.stdout)
    where = subprocess.run([sys.executable, '-c', 'import tools, train; print(tools.__file__, train.__file__)'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert where.stdout.split() == [str(target / 'tools' / '__init__.py'), str(target / 'train.py')]

#----------------------------------------------------------------------------
# README.md's set-up command and .ci/run install the same way (CI runs what the README tells a user to run).

def pip_commands(lines):
    """Each pip command of some shell lines, without --quiet/-q and comments, -y spelled --yes."""
    found = []
    for line in lines:
        for part in line.split('#')[0].split('&&'):
            words = [{'-y': '--yes'}.get(w, w) for w in part.split() if w not in ('--quiet', '-q')]
            if words[:1] == ['pip']:
                found.append(' '.join(words))
    return found


def test_readme_setup_and_ci_install_alike():
    readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read().splitlines()
    setup = [line for line in readme if line.startswith('python3 -m venv .venv')]
    assert len(setup) == 1, 'README.md has one set-up command line'
    ci = pip_commands(open(os.path.join(REPO, '.ci', 'run'), encoding='utf-8').read().splitlines())
    # CI adds one thing: the [gpu] extra's triton, so the Triton kernels' tests run (in Triton's CPU interpreter).
    gpu = 'pip install triton==3.9.0'
    assert gpu in ci and "'gpu': ['triton==3.9.0']" in open(os.path.join(REPO, 'setup.py'), encoding='utf-8').read()
    assert pip_commands(setup) == [command for command in ci if command != gpu]
    assert pip_commands(setup)[-1] == 'pip uninstall --yes torchvision'     # No broken torchvision left (issue 34).

#----------------------------------------------------------------------------
