"""The benchmarks run end to end with shrunken sizes and print every figure they promise."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared_file


@pytest.mark.slow
def test_bench_generator_quick_run():
    shared_file('eg3d_reference', 'ffhq512_param_spec.json')
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_generator.py'), '--repeats', '1', '--sigma-res', '16',
           '--chunk', '1024', '--rss-res', '24', '--rss-chunk', '4096', '--channel-base', '1024', '--channel-max', '32',
           '--threads', '1']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert 'channel_base 1024, channel_max 32' in text and '1 threads' in text
    assert re.search(r'\(a\) G forward, 1 image, neural rendering 64: median [\d.]+ s over 1', text)
    m = re.search(r'\(b\) sigma on a 16\^3 cube, chunk 1024 \(4 chunks\): streaming ([\d,]+) pt/s, per-chunk G.sample ([\d,]+) pt/s', text)
    assert m and all(int(g.replace(',', '')) > 0 for g in m.groups())
    assert re.search(r'\(c\) 24\^3 cube, chunk 4096, fresh subprocess: RSS [\d,]+ MiB', text)


def test_bench_generator_names_a_missing_spec(tmp_path):
    env = dict(os.environ, EG3D_RLHF_SHARED=str(tmp_path))
    out = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'bench_generator.py'), '--repeats', '1'],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0 and 'ffhq512_param_spec.json not found' in out.stderr


def test_bench_reward_quick_run():
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_reward.py'), '--shape', '32,36,33', '--batch', '2',
           '--repeats', '1', '--threads', '1', '--bank', '50', '--judgements', '40']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'slab 32x36x33, batch 2, 1 threads, median of 1 passes' in out.stdout
    for trunk in ('levels', 'cnn'):
        assert re.search(rf'{trunk} trunk: forward [\d.]+ s, peak RSS [\d,]+ MiB; forward \+ backward [\d.]+ s, peak RSS '
            r'[\d,]+ MiB', out.stdout), out.stdout
    assert re.search(r'cnn \(baseline\) epoch of 40 judgements: [\d,]+ s', out.stdout)
    m = re.search(r'levels whole fit on a 50-sample bank: [\d,]+ s .*; ([\d.]+)x faster than one CNN epoch', out.stdout)
    assert m and float(m.group(1)) > 0
    assert re.search(r'fine-tuning step \(forward \+ backward\): levels [\d.]+ s vs cnn [\d.]+ s per slab', out.stdout)


def test_bench_flow_quick_run(tmp_path):
    from eg3d_rlhf.generators import flow_heads
    tiny = flow_heads.PRESETS['tiny']
    flow_heads.save_flow(str(tmp_path / 'flow.pt'), flow_heads.build_pipeline(tiny, init_seed=0), tiny)
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_flow.py'), '--network', str(tmp_path / 'flow.pt'),
           '--samples', '1', '--batch', '2', '--res', '32', '--preview-res', '16', '--threads', '1']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert re.search(r'part +old: one id a pass +new: 2 ids a pass +old/new', text)
    both = r' +[\d.]+ s/sample +[\d.]+ s/sample +[\d.]+x'
    for part in (r'stage 1 \(structure\): euler x 4', r'hand-off 1 \(decode\)', r'stage 2 \(detail\): euler x 4',
            'slab from the volume', r'end to end \(draw and slab\)'):
        assert re.search(rf'flow {part}{both}', text), part
    assert re.search(rf'bank sample{both} +\(tools/sample_bank.py: draw, picture, slab, previews of 16 px', text)
    assert re.search(r'EG3D demo slab [\d.]+ s/sample: flow end to end x[\d.]+ \(old\), x[\d.]+ \(new\)', text)
    assert 'slab [16, 18, 17]' in text and 'median of 1 repeats' in text


def test_bench_attribution_quick_run():
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_attribution.py'), '--seeds', '2', '--permutations', '1',
           '--ig-steps', '2', '--batch', '2', '--threads', '1']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r'2 samples of \[32, 36, 33\], 9 regions, 1 threads', out.stdout)
    assert re.search(r'Shapley value sampling, 1 permutations: [\d.]+ s, \d+x the baseline', out.stdout)
    assert re.search(r'Integrated Gradients, 2 steps: [\d.]+ s, \d+x the baseline', out.stdout)


def test_bench_attribution_fast_quick_run():
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_attribution_fast.py'), '--res', '32', '--samples', '2',
           '--permutations', '3', '--ig-steps', '2', '--batch', '2', '--threads', '1']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '2 samples of [16, 18, 17], sigma reward (levels), 2 regions, 3 permutations, 2 IG steps, 1 threads' in out.stdout
    for path in ('reference', 'fast'):
        assert re.search(rf'{path} +path: +[\d.]+ s/sample \(Shapley [\d.]+, IG [\d.]+\); CPU [\d.]+ s/sample', out.stdout)
    assert re.search(r'speed-up: [\d.]+x wall, [\d.]+x CPU', out.stdout)
    for key in ('shapley', 'ig'):                   # The two paths agree (tests/test_attribution.py checks how closely).
        m = re.search(rf'{key}: largest difference ([\d.e+-]+) \(([\d.e+-]+) of \|change\|\)', out.stdout)
        assert m and float(m.group(2)) < 1e-4, out.stdout


def test_bench_flow_dpo_quick_run():
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_flow_dpo.py'), '--channels', '8', '--layers', '1',
           '--grid', '2', '--batch', '2', '--steps', '2', '--threads', '1', '--only', 'lora,precomputed']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert re.search(r'8 channels, 1 layers, grid 2\^3, 1,314 parameters .*batch 2 pairs, 2 steps, 1 threads, CPU', text)
    row = r' +[\d.]+ +[\d.]+ +[\d,]+ MiB +-?[\d,]+ MiB +-?[\d.]+ +-?[\d.]+'
    assert re.search(rf'^full{row}$', text, re.M) and re.search(rf'^precomputed{row}   \(reference precomputed in', text, re.M)
    from eg3d_rlhf.finetune import lora
    assert re.search(rf'^lora{row}$', text, re.M) if lora.available() else 'lora: skipped, peft is not installed' in text


def test_bench_grpo_quick_run():
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_grpo.py'), '--conditions', '1', '--group', '2',
           '--steps', '3', '--repeats', '1', '--threads', '1']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '1 conditions x 2 samples, 3 steps per stage, 1 threads, CPU' in out.stdout
    for name in ('both, full SDE', 'both, window 2', 'final, full SDE', 'final, window 2'):
        found = re.search(rf'^{name} +([\d.]+) +([\d.]+)x$', out.stdout, re.M)
        assert found and float(found.group(1)) > 0, out.stdout
        assert 'full' not in name or float(found.group(2)) == 1.0


@pytest.mark.slow
def test_bench_label_server_quick_run():
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_label_server.py'), '--crowd', '20', '--rounds', '1',
           '--bursts', '2', '--samples', '3', '--picture', '32']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert re.search(r'^bank of 3 samples, 12 pictures of 32 px \([\d.]+ KiB each\); \d+ CPUs, load average [\d.]+', text)
    row = r' +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +\d+ +\d+ of '
    for test, count in (('20 GETs at once, 1 rounds', 20), ('2 bursts of 8', 16)):
        section = text.split(test + '\n', 1)[1]
        assert re.match(rf'  thread per request, backlog 5 \(baseline\){row}{count}\n  pool of \d+, backlog \d+{row}{count}\n'
            r"  old/new: p99 [\d.]+x, max [\d.]+x; none of the new server's waited 1 s or more, none failed: "
            r'(yes|no, \d+ and \d+)\n', section), text


def test_bench_train_step_quick_run():
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'bench_train_step.py'), '--reps', '2', '--batch', '2',
           '--threads', '1']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {k: result[k] for k in ('batch', 'threads', 'steps')} == dict(batch=2, threads=1, steps=1)
    assert isinstance(result['native'], bool) and result['float32_s'] > 0 and result['bfloat16_s'] > 0
    assert result['ratio'] == pytest.approx(result['float32_s'] / result['bfloat16_s'], rel=1e-2)
