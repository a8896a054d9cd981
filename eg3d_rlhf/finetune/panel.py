"""A fixed panel of seeds scored by the reward model at every training tick: trajectories, before/after evidence."""

import csv
import os

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import report_plots
from eg3d_rlhf.analysis.evaluation import reward_change, seed_rewards
from eg3d_rlhf.finetune.reward_phase import check_finite
from eg3d_rlhf.generators.base import file_sha256, seed_ranges
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.rewards.checkpoint import shared_reward

#----------------------------------------------------------------------------
# Files written into the run directory:
#   reward_trajectories.csv     kimg,seedNNNNNN,... one row per tick (rewrites itself each tick)
#   reward_trajectories.png     one line per seed and the mean (the paper's Figure 8)
#   reward_histograms.png       first vs last tick                       } at the end of training
#   reward_deltas.png           per-seed change, sorted                  }
#   reward_scatter.png          last vs first with the fitted slope      } (the paper's Figure 9)
#   before_after.png            front and profile previews of the first  }
#                               PREVIEW_SEEDS panel seeds' slabs, first  }
#                               vs last tick                             }
#   reward_report.json/.html    reward_change() of first vs last tick    }
#
# The previews cost little: one generator pass of PREVIEW_SEEDS seeds on the reward's grid per record() (the first
# is "before", the latest "after"), and 4 seeds x 2 generators x 2 views rendered at PREVIEW_RES pixels in finish().
# For the demo (the bundled generator, its 32x36x33 slab) a pass takes about 0.3 s of one CPU core and the rendering
# 1.1 s, against about 18 s for each scoring of the 200 panel seeds.
#
# A resumed run continues the evidence of the run it resumes: the snapshot keeps state() (the ticks so far) and the
# starting generator, and restore() puts them back, so the report still measures change from where the first run
# began.

PREVIEW_SEEDS = 4           # Panel seeds shown in before_after.png.
PREVIEW_RES = 128           # Pixels per view.

def state_mismatch(state, reward_sha256, seeds):
    """Why a panel of `seeds` scored by the reward model with this sha256 cannot continue a snapshot's panel state
    (a sentence naming the flag to fix), or None."""
    if state['reward_sha256'] != reward_sha256:
        return 'its panel was scored with another reward model: pass the --reward-model it was trained with'
    old = [int(s) for s in state['seeds']]
    if old != list(seeds):
        contiguous = old == list(range(old[0], old[-1] + 1))
        return f"its panel scored other seeds: pass --panel-seeds={f'{old[0]}-{old[-1]}' if contiguous else ','.join(map(str, old))}"
    return None


class RewardPanel:
    def __init__(self,
        run_dir,                    # Where the files go.
        reward_model_path,          # The reward checkpoint the panel is scored with (usually the one being optimised).
        seeds,                      # Panel seeds, a list or a range string like '2000-2199' (keep them apart from the
                                    # reward model's training seeds).
        truncation_psi  = 0.7,      # As the sample banks.
        batch           = 8,        # Seeds per generator pass.
        device          = 'cpu',
    ):
        self.run_dir = run_dir
        self.seeds = seed_ranges(seeds) if isinstance(seeds, str) else [int(s) for s in seeds]
        self.reward = shared_reward(reward_model_path, device)
        self.reward_sha256 = file_sha256(reward_model_path)
        self.truncation_psi, self.batch = truncation_psi, batch
        self.kimg, self.rewards = [], []                # Ticks recorded so far: kimg and rewards [seeds].
        self.start = None                               # The preview seeds' slabs at the first tick.
        self.end = None                                 # The preview seeds' slabs at the latest tick.

    def generator(self, G_ema):
        return EG3DGenerator(G_ema, truncation_psi=self.truncation_psi, batch=self.batch)

    def record(self, G_ema, kimg):
        """Score every panel seed with G_ema, rewrite the CSV and trajectory plot; returns a one-line summary.
        Non-finite rewards raise NonFiniteReward and leave the files as the last good tick wrote them."""
        generator = self.generator(G_ema)
        rewards = check_finite(seed_rewards(generator, self.reward, self.seeds))
        self.kimg.append(float(kimg))
        self.rewards.append(rewards)
        self.end = self.preview_slabs(generator)
        if self.start is None:
            self.start = self.end
        rows = [[f'{k:g}', *[f'{r:.6g}' for r in rewards]] for k, rewards in zip(self.kimg, self.rewards)]
        with dnnlib.util.atomic_write(os.path.join(self.run_dir, 'reward_trajectories.csv'), 'w', encoding='utf-8') as f:
            writer = csv.writer(f, lineterminator='\n')
            writer.writerow(['kimg', *[f'seed{s:06d}' for s in self.seeds]])
            writer.writerows(rows)
        report_plots.plot_trajectories(self.kimg, np.stack(self.rewards), os.path.join(self.run_dir, 'reward_trajectories.png'))
        now, first = self.rewards[-1], self.rewards[0]
        return (f'panel of {len(self.seeds)} seeds: mean reward {now.mean():.3f} ({now.mean() - first.mean():+.3f} since '
            f'the start), {(now > first).sum()} rose')

    def preview_slabs(self, generator):
        """Raw sigma (numpy [PREVIEW_SEEDS, *grid]) of the first panel seeds on the reward's grid."""
        return generator.sigma_grid(self.seeds[:PREVIEW_SEEDS], self.reward.grid).numpy()

    def state(self):
        """What a snapshot keeps so that a resumed run continues this evidence (plain numbers and lists)."""
        return dict(seeds=list(self.seeds), reward_sha256=self.reward_sha256, kimg=list(self.kimg), rewards=[r.tolist() for r in self.rewards])

    def mismatch(self, state):
        return state_mismatch(state, self.reward_sha256, self.seeds)

    def restore(self, state, G_start):
        """Continue a snapshot's state(): its ticks, and "before" previews drawn from the run's starting generator;
        returns a one-line summary."""
        if self.mismatch(state) is not None:
            raise ValueError(f'cannot continue the panel: {self.mismatch(state)}')
        self.kimg = [float(k) for k in state['kimg']]
        self.rewards = [np.asarray(r, dtype=np.float64) for r in state['rewards']]
        self.start = self.preview_slabs(self.generator(G_start))
        return f'panel: continuing {len(self.kimg)} ticks from {self.kimg[0]:g} kimg to {self.kimg[-1]:g} kimg'

    def finish(self, stopped=None):
        """Before/after plots and the report (first vs last recorded tick; `stopped`, the reason a run ended early,
        goes into it); returns a one-line summary (the numbers are in self.summary and reward_report.json)."""
        before, after = self.rewards[0], self.rewards[-1]
        summary = dict(first_kimg=self.kimg[0], last_kimg=self.kimg[-1], **reward_change(before, after))
        if stopped is not None:
            summary['stopped'] = stopped
        out = lambda name: os.path.join(self.run_dir, name)
        report_plots.plot_histograms(before, after, out('reward_histograms.png'),
            labels=(f'{self.kimg[0]:g} kimg', f'{self.kimg[-1]:g} kimg'))
        report_plots.plot_deltas(before, after, out('reward_deltas.png'))
        report_plots.plot_scatter(before, after, dict(slope=summary['fit_slope'], intercept=summary['fit_intercept']),
            out('reward_scatter.png'))
        picture = preview.before_after(self.start, self.end, self.reward.grid,
            [f'seed{s:06d}' for s in self.seeds[:PREVIEW_SEEDS]], names=('before', 'after'), resolution=PREVIEW_RES)
        preview.save_picture(picture, out('before_after.png'))
        pictures = ['reward_trajectories.png', 'reward_histograms.png', 'reward_deltas.png', 'reward_scatter.png',
            'before_after.png']
        report_plots.write_report(self.run_dir, 'Reward panel', summary, pictures, name='reward_report')
        self.summary = summary
        return (f"panel: {summary['rose']} of {summary['seeds']} seeds rose, mean change {summary['mean_delta']:+.3f}, "
            f"slope {summary['fit_slope']:.2f}; see reward_report.html")

#----------------------------------------------------------------------------
