"""A fixed panel of seeds scored by the reward model at every training tick: trajectories, before/after evidence."""

import csv
import os

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import report_plots
from eg3d_rlhf.analysis.evaluation import reward_change, seed_rewards
from eg3d_rlhf.generators.base import seed_ranges
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.rewards.checkpoint import load_reward

#----------------------------------------------------------------------------
# Files written into the run directory:
#   reward_trajectories.csv     kimg,seedNNNNNN,... one row per tick (rewrites itself each tick)
#   reward_trajectories.png     one line per seed and the mean (the paper's Figure 8)
#   reward_histograms.png       first vs last tick                       } at the end of training
#   reward_deltas.png           per-seed change, sorted                  }
#   reward_scatter.png          last vs first with the fitted slope      } (the paper's Figure 9)
#   reward_report.json/.html    reward_change() of first vs last tick    }

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
        self.reward = load_reward(reward_model_path, device)
        self.truncation_psi, self.batch = truncation_psi, batch
        self.kimg, self.rewards = [], []                # Ticks recorded so far: kimg and rewards [seeds].

    def record(self, G_ema, kimg):
        """Score every panel seed with G_ema, rewrite the CSV and trajectory plot; returns a one-line summary."""
        generator = EG3DGenerator(G_ema, truncation_psi=self.truncation_psi, batch=self.batch)
        self.kimg.append(float(kimg))
        self.rewards.append(seed_rewards(generator, self.reward, self.seeds))
        rows = [[f'{k:g}', *[f'{r:.6g}' for r in rewards]] for k, rewards in zip(self.kimg, self.rewards)]
        with dnnlib.util.atomic_write(os.path.join(self.run_dir, 'reward_trajectories.csv'), 'w', encoding='utf-8') as f:
            writer = csv.writer(f, lineterminator='\n')
            writer.writerow(['kimg', *[f'seed{s:06d}' for s in self.seeds]])
            writer.writerows(rows)
        report_plots.plot_trajectories(self.kimg, np.stack(self.rewards), os.path.join(self.run_dir, 'reward_trajectories.png'))
        now, first = self.rewards[-1], self.rewards[0]
        return (f'panel of {len(self.seeds)} seeds: mean reward {now.mean():.3f} ({now.mean() - first.mean():+.3f} since '
            f'the start), {(now > first).sum()} rose')

    def finish(self):
        """Before/after plots and the report (first vs last recorded tick); returns a one-line summary (the numbers
        are in self.summary and reward_report.json)."""
        before, after = self.rewards[0], self.rewards[-1]
        summary = dict(first_kimg=self.kimg[0], last_kimg=self.kimg[-1], **reward_change(before, after))
        out = lambda name: os.path.join(self.run_dir, name)
        report_plots.plot_histograms(before, after, out('reward_histograms.png'),
            labels=(f'{self.kimg[0]:g} kimg', f'{self.kimg[-1]:g} kimg'))
        report_plots.plot_deltas(before, after, out('reward_deltas.png'))
        report_plots.plot_scatter(before, after, dict(slope=summary['fit_slope'], intercept=summary['fit_intercept']),
            out('reward_scatter.png'))
        report_plots.write_report(self.run_dir, 'Reward panel', summary, ['reward_trajectories.png',
            'reward_histograms.png', 'reward_deltas.png', 'reward_scatter.png'], name='reward_report')
        self.summary = summary
        return (f"panel: {summary['rose']} of {summary['seeds']} seeds rose, mean change {summary['mean_delta']:+.3f}, "
            f"slope {summary['fit_slope']:.2f}; see reward_report.html")

#----------------------------------------------------------------------------
