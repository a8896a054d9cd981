"""Persistent classes: pickles carry their module source and load without it, as EG3D's do."""

import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import REPO
from torch_utils import persistence

MODULE_SRC = textwrap.dedent('''
    """A throw-away module defining one persistent network."""
    import torch
    from torch_utils import persistence

    MARKER = 'defined in {tag}'

    @persistence.persistent_class
    class Scale(torch.nn.Module):
        def __init__(self, channels, gain=2.0):
            super().__init__()
            self.gain = gain
            self.weight = torch.nn.Parameter(torch.arange(channels, dtype=torch.float32))

        def forward(self, x):
            return x * self.weight * self.gain
''')


def _run_fresh(code, cwd):
    """Run `code` in a new interpreter that can import only this repository (plus site-packages)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_pickle_loads_after_defining_module_is_gone(tmp_path):
    src_dir = tmp_path / 'src'
    src_dir.mkdir()
    (src_dir / 'throwaway_net.py').write_text(MODULE_SRC.format(tag='throwaway'))
    pkl = tmp_path / 'net.pkl'
    _run_fresh(textwrap.dedent(f'''
        import sys, pickle, torch
        sys.path.insert(0, {str(src_dir)!r})
        import throwaway_net
        net = throwaway_net.Scale(3, gain=0.5)
        with torch.no_grad():
            net.weight.add_(1)
        with open({str(pkl)!r}, 'wb') as f:
            pickle.dump(dict(G=net), f)
    '''), cwd=str(tmp_path))
    (src_dir / 'throwaway_net.py').unlink()
    out = _run_fresh(textwrap.dedent(f'''
        import pickle, torch
        with open({str(pkl)!r}, 'rb') as f:
            net = pickle.load(f)['G']
        import sys
        assert 'throwaway_net' not in sys.modules
        print(type(net).__name__, type(net).__module__.startswith('_imported_module_'))
        print(net(torch.ones(3)).tolist(), net.init_args, dict(net.init_kwargs))
        print(sys.modules[type(net).__module__].MARKER)
    '''), cwd=str(tmp_path))
    lines = out.strip().splitlines()
    assert lines[0] == 'Scale True'
    assert lines[1] == '[0.5, 1.0, 1.5] [3] {\'gain\': 0.5}'
    assert lines[2] == 'defined in throwaway'


def test_meta_format_is_eg3d_version_6():
    net = _make_local_module('v6').Scale(2)
    reduced = net.__reduce__()
    assert reduced[0] is persistence._reconstruct_persistent_obj
    meta = reduced[1][0]
    assert meta['type'] == 'class' and meta['version'] == 6 and meta['class_name'] == 'Scale'
    assert "MARKER = 'defined in v6'" in meta['module_src']
    assert 'weight' in meta['state']['_parameters']


def test_same_source_loads_as_same_class_and_hooks_can_patch_it():
    net = _make_local_module('hooks').Scale(2)
    blob = pickle.dumps(net)
    a, b = pickle.loads(blob), pickle.loads(blob)
    assert type(a) is type(b) and persistence.is_persistent(a)

    def hook(meta):
        meta.module_src = meta.module_src.replace("'defined in hooks'", "'patched'")
        return meta
    persistence.import_hook(hook)
    try:
        c = pickle.loads(blob)
    finally:
        persistence._import_hooks.remove(hook)
    assert sys.modules[type(c).__module__].MARKER == 'patched'
    assert torch.equal(c.weight, net.weight)


def test_wrong_version_is_refused():
    net = _make_local_module('version').Scale(2)
    meta = dict(net.__reduce__()[1][0], version=5)
    with pytest.raises(ValueError, match='version 5'):
        persistence._reconstruct_persistent_obj(meta)


def test_unpicklable_constructor_arguments_are_refused():
    module = _make_local_module('args')
    with pytest.raises(TypeError, match='constructor arguments'):
        module.Scale(2, gain=lambda: 1)


def _make_local_module(tag):
    """Build the sample module from source in this process (persistence reads the source through its cache)."""
    return persistence._src_to_module(MODULE_SRC.format(tag=tag))
