"""Plugin machinery: failures fall back with one warning, builds are cached by source digest and device."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act
from torch_utils.ops import filtered_lrelu
from torch_utils.ops import upfirdn2d

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD_SOURCE = textwrap.dedent('''
    #include <pybind11/pybind11.h>
    static int add_ints(int a, int b) { return a + b; }
    PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("add_ints", &add_ints); }
''')


@pytest.fixture
def fresh(fresh_plugins):
    """tests/conftest.py's fresh_plugins: an empty cache and plugin table."""
    return fresh_plugins


def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def _plugin_warnings(record):
    return [w for w in record if 'reference implementation' in str(w.message)]


def _call_twice(**kwargs):
    """get_plugin twice with every warning recorded (no deduplication by the warnings registry)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        first = custom_ops.get_plugin(**kwargs)
        second = custom_ops.get_plugin(**kwargs)
    return first, second, _plugin_warnings(record)

#----------------------------------------------------------------------------

def test_broken_source_warns_once_and_returns_none(fresh):
    _write(fresh, 'broken.cpp', 'this is not C++ at all;\n')
    first, second, warned = _call_twice(module_name='broken_plugin', sources=['broken.cpp'], source_dir=str(fresh))
    assert first is None and second is None
    assert len(warned) == 1
    assert 'broken_plugin' in str(warned[0].message) and '\n' not in str(warned[0].message)


def test_missing_source_warns_once_and_returns_none(fresh):
    first, second, warned = _call_twice(module_name='missing_plugin', sources=['nope.cpp', 'nope.cu'],
        headers=['nope.h'], source_dir=str(fresh))
    assert first is None and second is None
    assert len(warned) == 1 and 'FileNotFoundError' in str(warned[0].message)


def test_env_switch_disables_plugins_silently(fresh, monkeypatch):
    monkeypatch.setenv('EG3D_RLHF_CUSTOM_OPS', '0')
    _write(fresh, 'good.cpp', GOOD_SOURCE)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert custom_ops.get_plugin(module_name='off_plugin', sources=['good.cpp'], source_dir=str(fresh)) is None
    assert not (fresh / 'cache').exists()


@pytest.mark.parametrize('op,init_name', [(bias_act, 'bias_act_plugin'), (upfirdn2d, 'upfirdn2d_plugin'), (filtered_lrelu, 'filtered_lrelu_plugin')])
def test_op_plugins_fall_back_with_one_warning(fresh, monkeypatch, op, init_name):
    # No working compiler (CXX names a missing program, fresh cache): asking for the plugin must fail softly, once.
    monkeypatch.setenv('CXX', str(fresh / 'no-such-compiler'))
    monkeypatch.setattr(op, '_plugin', None)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        assert op._init() is False          # pylint: disable=protected-access
        assert op._init() is False          # pylint: disable=protected-access
    warned = _plugin_warnings(record)
    assert len(warned) == 1 and init_name in str(warned[0].message)


@pytest.mark.parametrize('cpu_default', [False, True])
def test_plugins_asked_for_only_where_impl_and_cpu_default_allow(fresh, monkeypatch, cpu_default):
    asked = []
    def fake_get_plugin(module_name, **kwargs):
        asked.append(module_name)
        return None
    monkeypatch.setattr(custom_ops, 'get_plugin', fake_get_plugin)
    x = torch.randn([1, 2, 6, 6])
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for op in [bias_act, upfirdn2d, filtered_lrelu]:
        monkeypatch.setattr(op, '_plugin', None)
        monkeypatch.setattr(op, 'cpu_default', cpu_default)
    ops = [lambda impl: bias_act.bias_act(x, act='lrelu', impl=impl), lambda impl: upfirdn2d.upsample2d(x, f, impl=impl),
        lambda impl: filtered_lrelu.filtered_lrelu(x, f, f, up=2, down=2, padding=3, impl=impl)]
    for run in ops:
        assert torch.equal(run('ref'), run('cuda'))
    all_three = {'bias_act_plugin', 'upfirdn2d_plugin', 'filtered_lrelu_plugin'}
    assert set(asked) == (all_three if cpu_default else set())
    asked.clear()
    for run in ops:
        assert torch.equal(run('ref'), run('cpp'))     # No plugin here: impl='cpp' computes the reference result.
    assert set(asked) == all_three
    asked.clear()
    assert torch.equal(bias_act.bias_act(x.double(), impl='ref'), bias_act.bias_act(x.double(), impl='ref'))
    assert torch.equal(bias_act.bias_act(x.half(), impl='cpp'), bias_act.bias_act(x.half(), impl='ref'))
    assert asked == []                                  # Only float32/float64 CPU tensors ask.


def test_cache_key_follows_contents_and_device(fresh, monkeypatch):
    a = _write(fresh, 'a.cpp', GOOD_SOURCE)
    h = _write(fresh, 'a.h', '// header v1\n')
    key = custom_ops.build_dir('k_plugin', [str(a), str(h)])
    assert key.startswith(str(fresh / 'cache' / 'torch_extensions' / 'k_plugin'))
    assert custom_ops.build_dir('k_plugin', [str(h), str(a)]) == key                # Order does not matter.
    h.write_text('// header v2\n')
    assert custom_ops.build_dir('k_plugin', [str(a), str(h)]) != key                # Any file's bytes change it.
    h.write_text('// header v1\n')
    assert custom_ops.build_dir('k_plugin', [str(a), str(h)]) == key
    monkeypatch.setattr(custom_ops, '_device_tag', lambda: 'some-other-gpu')
    assert custom_ops.build_dir('k_plugin', [str(a), str(h)]) != key                # So does the GPU.
    assert os.path.basename(key).split('-')[1] == 'cpu'                             # The CPU's tag comes first.


LIBRARY_SOURCE = textwrap.dedent('''
    #include <torch/library.h>
    static at::Tensor twice(at::Tensor x) { return x.mul(2); }
    #define REGISTER_OPERATORS(ns, m) TORCH_LIBRARY(ns, m)
    REGISTER_OPERATORS(TORCH_EXTENSION_NAME, m) { m.def("twice", &twice); }
''')


def test_operator_library_plugin_is_torch_ops_and_reloads_from_its_marker(fresh):
    # is_python_module=False (the CPU plugins): the plugin is the torch.ops namespace its TORCH_LIBRARY block fills,
    # and a new process loads the marked build without cpp_extension, as a Python module plugin does.
    _write(fresh, 'lib.cpp', LIBRARY_SOURCE)
    kwargs = dict(module_name='lib_plugin', sources=['lib.cpp'], source_dir=str(fresh), is_python_module=False)
    plugin = custom_ops.get_plugin(**kwargs)
    assert plugin is not None and torch.equal(plugin.twice(torch.arange(3.0)), torch.tensor([0.0, 2.0, 4.0]))
    assert custom_ops.is_built(**kwargs)
    script = ('import sys, torch; sys.path.insert(0, sys.argv[1]); from torch_utils import custom_ops; '
        'custom_ops.verbosity = "none"; m = custom_ops.get_plugin(module_name="lib_plugin", sources=["lib.cpp"], '
        'source_dir=sys.argv[2], is_python_module=False); '
        'print(m.twice(torch.ones(2)).tolist(), "torch.utils.cpp_extension" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', script, REPO, str(fresh)], capture_output=True, text=True,
        env=os.environ.copy(), check=True, timeout=300).stdout.strip().splitlines()[-1]
    assert out == '[2.0, 2.0] False'

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_valid_plugin_builds_once_and_is_reused(fresh):
    src = _write(fresh, 'tiny.cpp', GOOD_SOURCE)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        module = custom_ops.get_plugin(module_name='tiny_plugin', sources=['tiny.cpp'], source_dir=str(fresh))
    assert module is not None and module.add_ints(2, 40) == 42
    assert custom_ops.get_plugin(module_name='tiny_plugin', sources=['tiny.cpp'], source_dir=str(fresh)) is module

    folder = custom_ops.build_dir('tiny_plugin', [str(src)])
    libraries = [name for name in os.listdir(folder) if name.endswith('.so') or name.endswith('.pyd')]
    assert len(libraries) == 1
    lib_path = os.path.join(folder, libraries[0])
    built_at = os.stat(lib_path).st_mtime_ns

    # A new process with the same sources loads the cached build: the library is not rewritten, and the lock file a
    # killed build leaves behind does not make it wait forever.
    open(os.path.join(folder, 'lock'), 'w').close()
    script = ('import sys; sys.path.insert(0, sys.argv[1]); from torch_utils import custom_ops; custom_ops.verbosity = "none"; '
        'm = custom_ops.get_plugin(module_name="tiny_plugin", sources=["tiny.cpp"], source_dir=sys.argv[2]); '
        'print(m.add_ints(1, 2), "torch.utils.cpp_extension" in sys.modules)')
    load = lambda: subprocess.run([sys.executable, '-c', script, REPO, str(fresh)], capture_output=True, text=True,
        env=os.environ.copy(), check=True, timeout=300).stdout.strip().splitlines()[-1]
    assert load() == '3 False'                      # The marker the first load left: no cpp_extension, no ninja run.
    assert os.stat(lib_path).st_mtime_ns == built_at
    assert sorted(os.listdir(os.path.dirname(folder))) == [os.path.basename(folder)]  # Still one build for this module.

    # A marker written under another torch goes the long way (cpp_extension and ninja decide), and is rewritten.
    marker = os.path.join(folder, custom_ops.LOADED_MARKER)
    with open(marker) as f:
        text = f.read()
    with open(marker, 'w') as f:
        f.write(text.replace(torch.__version__, '0.0.1'))
    assert load() == '3 True'
    assert load() == '3 False' and os.stat(lib_path).st_mtime_ns == built_at

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_first_builds_run_side_by_side_while_the_body_runs(fresh, monkeypatch):
    _write(fresh, 'one.cpp', GOOD_SOURCE)
    _write(fresh, 'two.cpp', GOOD_SOURCE.replace('a + b', 'a * b'))
    _write(fresh, 'bad.cpp', 'this is not C++\n')
    one, two, bad = [dict(module_name=f'tiny_{name}_plugin', sources=[f'{name}.cpp'], source_dir=str(fresh))
        for name in ('one', 'two', 'bad')]
    with custom_ops.building_in_background([one, two, bad]):
        started = [custom_ops.is_built(**p) for p in (one, two, bad)]
    assert started == [False, False, False]                         # The body ran before the builds had finished.
    assert custom_ops.is_built(**one) and custom_ops.is_built(**two) and not custom_ops.is_built(**bad)
    assert custom_ops.get_plugin(**one).add_ints(6, 7) == 13 and custom_ops.get_plugin(**two).add_ints(6, 7) == 42
    monkeypatch.setattr(custom_ops, 'verbosity', 'brief')
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        assert custom_ops.get_plugin(**bad) is None                 # The failed child left the op to its own fallback.
    assert len(_plugin_warnings(record)) == 1


def test_nothing_starts_when_every_plugin_is_built_or_plugins_are_off(fresh, monkeypatch, capsys):
    started = []
    class Child:                                                    # A build that ends at once.
        def __init__(self, args, **_):
            started.append(args)
        def wait(self):
            return 0
    monkeypatch.setattr(subprocess, 'Popen', Child)
    monkeypatch.setattr(custom_ops, 'verbosity', 'brief')
    monkeypatch.setattr(custom_ops, 'is_built', lambda **_: True)
    with custom_ops.building_in_background([bias_act.PLUGIN, upfirdn2d.PLUGIN]):
        pass
    monkeypatch.setattr(custom_ops, 'is_built', lambda **_: False)
    monkeypatch.setenv('EG3D_RLHF_CUSTOM_OPS', '0')
    with custom_ops.building_in_background([bias_act.PLUGIN, upfirdn2d.PLUGIN]):
        pass
    assert started == [] and capsys.readouterr().out == ''
    monkeypatch.delenv('EG3D_RLHF_CUSTOM_OPS')
    monkeypatch.setitem(custom_ops._cached_plugins, 'upfirdn2d_plugin', None)    # Asked for in this process already.
    with custom_ops.building_in_background([bias_act.PLUGIN, upfirdn2d.PLUGIN]):
        pass
    assert len(started) == 1 and json.loads(started[0][-1]) == bias_act.PLUGIN
    assert 'Compiling bias_act_plugin side by side' in capsys.readouterr().out

#----------------------------------------------------------------------------
