"""A fixed panel of seeds scored by the reward model at every training tick: trajectories, before/after evidence."""

import csv
import os

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import report_plots
from eg3d_rlhf.analysis.evaluation import reward_change, seed_rewards
from eg3d_rlhf.generators.base import seed_ranges
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.rewards.checkpoint import load_reward

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
# The previews cost little: one generator pass of PREVIEW_SEEDS seeds on the reward's grid at the first record() and
# one in finish() (the starting and the final G_ema), and 4 seeds x 2 generators x 2 views rendered at PREVIEW_RES
# pixels in finish(). For the demo (the bundled generator, its 32x36x33 slab) that is about 1.7 s of one CPU core
# in all: 0.3 s per pass and 1.1 s of rendering, against about 18 s for each scoring of the 200 panel seeds.

PREVIEW_SEEDS = 4           # Panel seeds shown in before_after.png.
PREVIEW_RES = 128           # Pixels per view.

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
        self.start = None                               # The preview seeds' slabs at the first tick.
        self.latest = None                              # The adapter of the latest tick's G_ema.

    def record(self, G_ema, kimg):
        """Score every panel seed with G_ema, rewrite the CSV and trajectory plot; returns a one-line summary."""
        generator = EG3DGenerator(G_ema, truncation_psi=self.truncation_psi, batch=self.batch)
        self.kimg.append(float(kimg))
        self.rewards.append(seed_rewards(generator, self.reward, self.seeds))
        if self.start is None:
            self.start = self.preview_slabs(generator)
        self.latest = generator
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

    def finish(self):
        """Before/after plots and the report (first vs last recorded tick); returns a one-line summary (the numbers
        are in self.summary and reward_report.json). The after previews draw the last record()'s G_ema as it is
        now: the training loop calls finish() right after that record()."""
        before, after = self.rewards[0], self.rewards[-1]
        summary = dict(first_kimg=self.kimg[0], last_kimg=self.kimg[-1], **reward_change(before, after))
        out = lambda name: os.path.join(self.run_dir, name)
        report_plots.plot_histograms(before, after, out('reward_histograms.png'),
            labels=(f'{self.kimg[0]:g} kimg', f'{self.kimg[-1]:g} kimg'))
        report_plots.plot_deltas(before, after, out('reward_deltas.png'))
        report_plots.plot_scatter(before, after, dict(slope=summary['fit_slope'], intercept=summary['fit_intercept']),
            out('reward_scatter.png'))
        picture = preview.before_after(self.start, self.preview_slabs(self.latest), self.reward.grid,
            [f'seed{s:06d}' for s in self.seeds[:PREVIEW_SEEDS]], names=('before', 'after'), resolution=PREVIEW_RES)
        preview.save_picture(picture, out('before_after.png'))
        pictures = ['reward_trajectories.png', 'reward_histograms.png', 'reward_deltas.png', 'reward_scatter.png',
            'before_after.png']
        report_plots.write_report(self.run_dir, 'Reward panel', summary, pictures, name='reward_report')
        self.summary = summary
        return (f"panel: {summary['rose']} of {summary['seeds']} seeds rose, mean change {summary['mean_delta']:+.3f}, "
            f"slope {summary['fit_slope']:.2f}; see reward_report.html")

#----------------------------------------------------------------------------
