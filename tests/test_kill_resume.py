"""benchmarks/kill_resume.py on a tiny reward run: a run killed with SIGKILL resumes and reports change from its start."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.helpers.train import TRAIN_ARGS, base_args


@pytest.mark.slow
def test_a_killed_reward_run_resumes_from_its_snapshot_and_reports_change_from_the_start(data, rewards, start_pkl, tmp_path):
    train_args = base_args(data, 'unused', *TRAIN_ARGS, '--tick', '0.002', '--kimg', '0.008', '--resume', start_pkl,
        '--trust-pickle', '--reward', 'sigma', '--reward-model', rewards['sigma'], '--reward-batch', '2', '--panel-seeds', '3-5')
    train_args = train_args[2:]                                                 # The script gives each run its --outdir.
    cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'kill_resume.py'), '--outdir', str(tmp_path / 'kr'),
        '--trials', '1', '--baselines', '2', '--kill-seed', '5', '--after-snapshot', *train_args]   # At 63% of a run.
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.load(open(tmp_path / 'kr' / 'kill_resume.json'))
    (trial,) = summary['trials']
    assert trial['first_kimg'] == 0 and trial['last_kimg'] == 0.008                # The whole run, from the start,
    assert trial['same_start']                                                  # scored from the original generator.
    assert trial['resumed_from_kimg'] is not None                               # It resumed (not started again).
    assert trial['temporaries_after_resume'] == 0 and trial['same_trajectory']       # Exactly the uninterrupted run.
    assert [b['seed'] for b in summary['baselines']] == [0, 1] and summary['noise_std'] > 0
    assert 'trial 0: killed after' in out.stdout and 'every trial holds' in out.stdout
