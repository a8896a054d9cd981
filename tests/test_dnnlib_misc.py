"""dnnlib utilities, torch_utils.misc helpers and training_stats behave as EG3D code expects."""

import os

import numpy as np
import pytest
import torch

import dnnlib
from eg3d_rlhf.data import preferences
from torch_utils import misc, training_stats


def test_easydict_attribute_access():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {'a': 1, 'b': 2} and d.a == 1
    del d.a
    with pytest.raises(AttributeError):
        _ = d.a


def test_construct_class_and_get_obj_by_name():
    layer = dnnlib.util.construct_class_by_name(class_name='torch.nn.Linear', in_features=3, out_features=2)
    assert isinstance(layer, torch.nn.Linear) and layer.weight.shape == (2, 3)
    assert dnnlib.util.get_obj_by_name('os.path.join') is os.path.join
    assert dnnlib.util.get_obj_by_name('torch.nn.functional.softplus') is torch.nn.functional.softplus
    with pytest.raises(ValueError, match='cannot find'):
        dnnlib.util.get_obj_by_name('torch.nn.NoSuchLayer')



def test_json_safe_writes_non_finite_numbers_as_null(tmp_path):
    import json
    from eg3d_rlhf.analysis import report_plots
    summary = {'win_rate': float('nan'), 'rows': [1.5, float('inf'), (float('-inf'), 'x')], 'n': 3}
    assert dnnlib.util.json_safe(summary) == {'win_rate': None, 'rows': [1.5, None, [None, 'x']], 'n': 3}
    report_plots.write_report(str(tmp_path), 'r', summary, [])
    strict = json.loads((tmp_path / 'report.json').read_text(), parse_constant=lambda c: pytest.fail(c))
    assert strict['win_rate'] is None and strict['rows'][0] == 1.5

def test_open_url_local_file_and_file_url(tmp_path):
    path = tmp_path / 'x y.bin'
    path.write_bytes(b'abc')
    with dnnlib.util.open_url(str(path)) as f:
        assert f.read() == b'abc'
    with dnnlib.util.open_url(path.as_uri()) as f:
        assert f.read() == b'abc'
    with pytest.raises(FileNotFoundError, match='no such file'):
        dnnlib.util.open_url(str(tmp_path / 'missing.pkl'))


@pytest.mark.parametrize('url', ['https://example.com/ffhq512-128.pkl', 'http://x/y.pkl'])
def test_open_url_refuses_network(url):
    with pytest.raises(IOError, match='download it and pass the local path'):
        dnnlib.util.open_url(url)


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path))
    assert dnnlib.make_cache_dir_path('a', 'b') == os.path.join(str(tmp_path), 'a', 'b')
    monkeypatch.delenv('EG3D_RLHF_CACHE')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert dnnlib.make_cache_dir_path('c') == os.path.join(str(tmp_path), 'xdg', 'eg3d-rlhf', 'c')


def test_assert_shape():
    x = torch.zeros(2, 3, 4)
    misc.assert_shape(x, [2, None, 4])
    with pytest.raises(AssertionError, match='dimension 1'):
        misc.assert_shape(x, [2, 5, 4])
    with pytest.raises(AssertionError, match='number of dimensions'):
        misc.assert_shape(x, [2, 3])


def test_constant_is_cached_and_broadcast():
    a = misc.constant([1, 2], shape=[3, 2], dtype=torch.float32)
    b = misc.constant([1, 2], shape=[3, 2], dtype=torch.float32)
    assert a is b and a.shape == (3, 2) and a[2].tolist() == [1.0, 2.0]
    assert misc.constant(np.float32(5)).dtype == torch.get_default_dtype()


def test_profiled_function_keeps_name_and_result():
    @misc.profiled_function
    def double(x):
        return 2 * x
    assert double.__name__ == 'double' and double(3) == 6


def test_copy_params_and_buffers():
    src, dst = torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)
    with torch.no_grad():
        src.weight.fill_(3)
        src.running_mean.fill_(7)
    misc.copy_params_and_buffers(src, dst, require_all=True)
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.running_mean, src.running_mean)
    assert dst.weight.requires_grad
    with pytest.raises(KeyError):
        misc.copy_params_and_buffers(torch.nn.Module(), dst, require_all=True)
    with pytest.raises(ValueError, match='shape'):
        misc.copy_params_and_buffers(torch.nn.BatchNorm1d(5), dst)


def test_print_module_summary(capsys):
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    out = misc.print_module_summary(net, [torch.zeros(4, 3)])
    text = capsys.readouterr().out
    assert out.shape == (4, 2)
    assert 'Total' in text and str(3 * 5 + 5 + 5 * 2 + 2) in text and '[4, 5]' in text


def test_ddp_sync_without_ddp_is_a_no_op():
    net = torch.nn.Linear(2, 2)
    with misc.ddp_sync(net, sync=False):
        net(torch.ones(1, 2)).sum().backward()
    assert net.weight.grad is not None


def test_training_stats_collect_per_interval():
    collector = training_stats.Collector(regex='TestStats/.*', keep_previous=False)
    training_stats.report('TestStats/a', torch.tensor([1.0, 2.0, 3.0, 6.0]))
    training_stats.report('TestStats/a', 8.0)
    training_stats.report('Elsewhere/b', 1.0)
    collector.update()
    assert collector.names() == ['TestStats/a']
    assert collector.num('TestStats/a') == 5
    assert collector.mean('TestStats/a') == pytest.approx(4.0)
    assert collector.std('TestStats/a') == pytest.approx(np.std([1, 2, 3, 6, 8]))
    collector.update()
    assert collector.num('TestStats/a') == 0 and np.isnan(collector['TestStats/a'])
    training_stats.report0('TestStats/a', [10.0])
    collector.update()
    assert collector.as_dict()['TestStats/a'] == dict(num=1, mean=10.0, std=0.0)


def test_ddp_helpers_on_a_gloo_group(tmp_path):
    torch.distributed.init_process_group('gloo', init_method=(tmp_path / 'rendezvous').as_uri(), rank=0, world_size=1)
    try:
        net = torch.nn.Linear(2, 2)
        misc.check_ddp_consistency(net)                             # One rank agrees with itself, nan included.
        with torch.no_grad():
            net.weight[0, 0] = float('nan')
        misc.check_ddp_consistency(net)
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
        with misc.ddp_sync(ddp, sync=False):
            ddp(torch.ones(1, 2)).sum().backward()
        assert ddp.module.weight.grad is not None
        with pytest.raises(AssertionError, match='differs between ranks'):   # A buffer that broadcast would change.
            _check_against_other_rank(torch.nn.Linear(2, 2))
    finally:
        torch.distributed.destroy_process_group()


def _check_against_other_rank(net):
    """check_ddp_consistency with rank 0's copy replaced by different values (simulates a diverged rank)."""
    real_broadcast = torch.distributed.broadcast
    def broadcast(tensor, src, **kwargs):
        tensor.add_(1)
    torch.distributed.broadcast = broadcast
    try:
        misc.check_ddp_consistency(net)
    finally:
        torch.distributed.broadcast = real_broadcast

#----------------------------------------------------------------------------
# JSON (every reader: dnnlib.util.decode_json): a number of more than 4300 digits is refused naming the file.

@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('reader', ['read_json_object', 'load_judgements'])
def test_a_json_number_of_5000_digits_is_refused(tmp_path, reader):
    path = tmp_path / 'f.json'
    path.write_text('{"a": "seed000001", "b": "seed000002", "choice": "a", "n": ' + '9' * 5000 + '}\n')
    read = dnnlib.util.read_json_object if reader == 'read_json_object' else preferences.load_judgements
    with pytest.raises(ValueError, match='JSON holds a number of more than 4300 digits') as err:
        read(str(path))                                 # Before: ValueError of int(), no file named.
    assert str(err.value).startswith(str(path))
