"""A fixed panel of seeds scored by the reward model at every training tick: trajectories, collateral, before/after."""

import csv
import os

import numpy as np
import torch

import dnnlib
from eg3d_rlhf.analysis import collateral, overoptimization, report_plots
from eg3d_rlhf.analysis.evaluation import reward_change
from eg3d_rlhf.data.annotators import taste_function
from eg3d_rlhf.finetune import panel_cache
from eg3d_rlhf.finetune.gold_studies import GoldStudies, save_generator
from eg3d_rlhf.finetune.reward_phase import check_finite
from eg3d_rlhf.generators.base import file_sha256, seed_ranges
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid
from eg3d_rlhf.rewards import aggregate
from eg3d_rlhf.rewards.checkpoint import shared_reward
from eg3d_rlhf.synthetic import family
from torch_utils import training_stats

#----------------------------------------------------------------------------
# Files written into the run directory:
#   reward_trajectories.csv     kimg,seedNNNNNN,... one row per tick (rewrites itself each tick)
#   reward_trajectories.png     one line per seed and the mean (the paper's Figure 8)
#   reward_histograms.png       first vs last tick                       } at the end of training
#   reward_deltas.png           per-seed change, sorted                  }
#   reward_scatter.png          last vs first with the fitted slope      } (the paper's Figure 9)
#   before_after.png            front and profile previews, first vs     }
#                               last tick, of the PREVIEW_SEEDS collat-  }
#                               eral seeds whose tastes fell furthest,   }
#                               and where their surface moved (without   }
#                               collateral seeds: the first panel seeds) }
#   reward_report.json/.html    reward_change() of first vs last tick,   }
#                               the collateral, and as its first line    }
#                               the hacking alarm when it is raised      }
#
# The collateral (analysis/collateral.py): the first `collateral_seeds` panel seeds are drawn on a slab grid of
# `collateral_res` at the first tick and at the end (every tick with stop_on_hacking) and measured under every
# simulated taste, the mesh statistics and the true geometry (nose prominence in world units). With stop_on_hacking
# the first tick at which the alarm is raised sets `stop_reason`, and the training loop ends the run there with a
# snapshot. For the demo, 64 seeds on the 128 grid's 64x71x65 slab cost about 9 s of 2 CPU cores per measurement.
#
# The previews cost little: one generator pass of PREVIEW_SEEDS seeds on the reward's grid per record() (the first
# is "before", the latest "after"), and 4 seeds x 2 generators x 2 views rendered at PREVIEW_RES pixels in finish().
# For the demo (the bundled generator, its 32x36x33 slab) a pass takes about 0.3 s of one CPU core and the rendering
# 1.1 s, against about 18 s for each scoring of the 200 panel seeds.
#
# Proxy against gold (analysis/overoptimization.py): the pass that scores the panel keeps every ensemble member's
# reward, so each tick also records the members' mean (the proxy), the aggregate the run optimises, the members' mean
# sd (their disagreement), the gold taste's mean on the same slabs (--gold-taste), and two distances from the start:
# the RMS change of raw sigma on the first DISTANCE_SEEDS panel seeds (its unit is sigma's; the plots' x axis) and
# the RMS change of G_ema's parameters. They go to stats.jsonl and TensorBoard as Panel/*, to proxy_gold.png and the
# report; --stop-at-peak stops the run by them (gold passed its peak, or without gold the disagreement grew).
#
# A resumed run continues the evidence of the run it resumes: the snapshot keeps state() (the ticks so far) and the
# starting generator, and restore() puts them back, so the report still measures change from where the first run
# began.

PREVIEW_SEEDS = 4           # Panel seeds shown in before_after.png.
PREVIEW_RES = 128           # Pixels per view.
DISTANCE_SEEDS = 32         # Panel seeds whose slabs measure the distance from the start.
PEAK_PKL = 'gold-peak.pkl'   # stop_at_peak with gold: G_ema of the best gold tick so far, in the run folder.
LEVEL = 10.0                # The surface level the gold taste reads (the annotators').

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
        collateral_seeds = 64,      # The first N panel seeds are measured under every taste (analysis/collateral.py).
        collateral_res  = 128,      # Cube resolution of their slabs.
        stop_on_hacking = False,    # Measure them every tick; set stop_reason when the hacking alarm is raised.
        aggregate_kind  = 'mean',   # The aggregate of the members the run optimises (rewards/aggregate.py).
        aggregate_lambda = 1.0,     # Its weight of the members' spread.
        gold_taste      = None,     # A simulated taste scored on the panel's slabs each tick as the gold standard.
        stop_at_peak    = False,    # Set stop_reason once gold passed its peak (or without gold, disagreement grew).
        peak_margin     = 0.2,      # Share of gold's peak gain whose loss stops (so does a fall past the fit's peak).
        disagreement_stop = 2.0,    # Without gold: the multiple of the start's disagreement that stops.
        peak_noise      = 2.0,      # With gold: the fall must also reach this many of overoptimization.fall_noise.
        peak_patience   = 1,        # With gold: ticks in a row the gold rule must hold.
        gold_study_every = 0,       # Every N ticks keep G_ema for a study against the start (gold_studies.py); 0 = off.
        device          = 'cpu',
    ):
        self.run_dir = run_dir
        self.seeds = seed_ranges(seeds) if isinstance(seeds, str) else [int(s) for s in seeds]
        self.reward = shared_reward(reward_model_path, device)
        self.reward_model_path = reward_model_path
        self.reward_sha256 = file_sha256(reward_model_path)
        self.device = torch.device(device)
        self.truncation_psi, self.batch = truncation_psi, batch
        self.kimg, self.rewards = [], []                # Ticks recorded so far: kimg and rewards [seeds].
        self.start = None                               # The preview seeds' slabs at the first tick.
        self.end = None                                 # The preview seeds' slabs at the latest tick.
        self.collateral_seeds = self.seeds[:collateral_seeds]
        self.collateral_grid = slab_grid(collateral_res, crop=SlabCrop())   # Its cube length: the generator's, below.
        self.collateral_res, self.stop_on_hacking = collateral_res, stop_on_hacking
        self.before = self.after = None                 # (kimg, slabs, measures) of the collateral seeds.
        self.collateral = None                          # collateral.compare() of before and after.
        self.stop_reason = None                         # The alarm that asks the training loop to stop.
        self.pictures = []                              # PNGs the latest record() or finish() drew (--report-to logs them).
        aggregate.check(aggregate_kind, aggregate_lambda)
        self.aggregate = (aggregate_kind, float(aggregate_lambda))
        self.gold_taste, self.gold = gold_taste, None if gold_taste is None else taste_function(gold_taste)
        self.stop_at_peak, self.peak_margin, self.disagreement_stop = stop_at_peak, float(peak_margin), float(disagreement_stop)
        self.peak_noise, self.peak_patience = float(peak_noise), int(peak_patience)
        self.curves = overoptimization.Curves()         # Proxy, gold and distance per recorded tick.
        self.start_distance_slabs = self.start_params = None
        self.gold_studies = GoldStudies(run_dir, gold_study_every) if gold_study_every else None
        self.peak_kept = None                           # kimg of the G_ema in PEAK_PKL (stop_at_peak with gold).

    def generator(self, G_ema):
        return EG3DGenerator(G_ema, truncation_psi=self.truncation_psi, batch=self.batch)

    def random_state_kept(self):
        """record(), restore() and measure() leave torch's random state as they found it (EG3D's camera sampler draws
        from it), so a run takes the same steps whether, how often and from where (panel_cache) its panel records."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == 'cuda' else [])

    def record(self, G_ema, kimg):
        """Score every panel seed with G_ema, rewrite the CSV and trajectory plot; returns a one-line summary.
        Non-finite rewards raise NonFiniteReward and leave the files as the last good tick wrote them. The first
        record is the start's evidence, read from the cache when a run started from this generator before."""
        with self.random_state_kept():
            if self.start is None:
                rewards, self.start, self.before, drawn = self.start_evidence(G_ema, kimg)
                self.end = self.start
            else:
                generator = self.generator(G_ema)
                drawn = self.draw(generator)
                rewards = drawn['rewards']
                self.end = self.preview_slabs(generator)
                if self.collateral_seeds and self.stop_on_hacking:
                    self.after = self.measure(generator, kimg)
        self.kimg.append(float(kimg))
        self.rewards.append(rewards)
        self.track(G_ema, kimg, drawn)
        if self.gold_studies is not None:
            self.gold_studies.keep(G_ema, len(self.curves) - 1, kimg, self.curves.rows['distance'][-1],
                self.curves.gains('proxy')[-1])
        if self.after is not None and self.after[0] == self.kimg[-1]:
            self.stop_reason = self.check()
        if self.stop_at_peak and self.curves.has_gold() and np.argmax(self.curves.rows['gold']) == len(self.curves) - 1:
            save_generator(os.path.join(self.run_dir, PEAK_PKL), G_ema)  # The best gold so far: what a stop returns.
            self.peak_kept = float(kimg)
        if self.stop_reason is None and self.stop_at_peak:
            self.stop_reason = self.peak_reason()
        rows = [[f'{k:g}', *[f'{r:.6g}' for r in rewards]] for k, rewards in zip(self.kimg, self.rewards)]
        with dnnlib.util.atomic_write(os.path.join(self.run_dir, 'reward_trajectories.csv'), 'w', encoding='utf-8') as f:
            writer = csv.writer(f, lineterminator='\n')
            writer.writerow(['kimg', *[f'seed{s:06d}' for s in self.seeds]])
            writer.writerows(rows)
        report_plots.plot_trajectories(self.kimg, np.stack(self.rewards), os.path.join(self.run_dir, 'reward_trajectories.png'))
        self.pictures = ['reward_trajectories.png']
        now, first = self.rewards[-1], self.rewards[0]
        line = (f'panel of {len(self.seeds)} seeds: mean reward {now.mean():.3f} ({now.mean() - first.mean():+.3f} since '
            f'the start), {(now > first).sum()} rose')
        if self.after is not None and self.after[0] == self.kimg[-1]:
            line += f'; {collateral.summary_line(self.collateral)}'
        return line + (f'\nstopping: {self.stop_reason}' if self.stop_reason else '')

    def collateral_grid_of(self, generator):
        """The collateral seeds' slab grid in the generator's cube, kept as self.collateral_grid (the pictures')."""
        self.collateral_grid = slab_grid(self.collateral_res, cube_length=generator.cube_length, crop=SlabCrop())
        return self.collateral_grid

    def measure(self, generator, kimg):
        """(kimg, slabs [N, *grid] float16, collateral.measure()) of the collateral seeds."""
        grid = self.collateral_grid_of(generator)
        with self.random_state_kept():
            measures, slabs = collateral.measure_drawn(lambda seeds: generator.sigma_grid(seeds, grid).numpy(),
                self.collateral_seeds, grid, chunk=self.batch)
        return kimg, slabs, measures

    def start_evidence(self, G, kimg):
        """(rewards [seeds], preview slabs, the collateral's (kimg, slabs, measures) or None) of the starting generator
        G: read from panel_cache when an earlier run computed them, else computed and kept there."""
        generator = self.generator(G)
        n = len(self.collateral_seeds)
        shapes = dict(rewards=[len(self.seeds)], preview=[min(PREVIEW_SEEDS, len(self.seeds)), *self.reward.grid.shape],
            slabs=[n, *self.collateral_grid_of(generator).shape] if n else None,
            members=[len(self.seeds), int(getattr(self.reward.model, 'members', 1))],
            distance=[min(DISTANCE_SEEDS, len(self.seeds)), *self.reward.grid.shape],
            gold=[len(self.seeds)] if self.gold else None)
        key = panel_cache.entry_key(G, reward=self.reward_sha256, seeds=self.seeds, psi=self.truncation_psi, batch=self.batch,
            device=str(generator.device), shapes=shapes, collateral_res=self.collateral_res, collateral_seeds=self.collateral_seeds,
            gold=self.gold_taste)
        entry = panel_cache.load(key, shapes)
        if entry is not None and (not n or collateral.well_formed(entry[1], n)):
            arrays, measures = entry
            drawn = dict(rewards=arrays['rewards'], members=arrays['members'], gold=arrays.get('gold'),
                distance=arrays['distance'])
            return arrays['rewards'], arrays['preview'], (kimg, arrays['slabs'], measures) if n else None, drawn
        drawn = self.draw(generator)
        preview_slabs = self.preview_slabs(generator)
        before = self.measure(generator, kimg) if n else None
        arrays = dict(rewards=drawn['rewards'], preview=preview_slabs, members=drawn['members'], distance=drawn['distance'],
            **(dict(gold=drawn['gold']) if self.gold else {}), **(dict(slabs=before[1]) if n else {}))
        panel_cache.save(key, arrays, before[2] if n else None)
        return drawn['rewards'], preview_slabs, before, drawn

    def draw(self, generator):
        """One pass over the panel seeds on the reward's grid: dict(rewards [N] (the members' mean, as the reward
        scores), members [N, K], gold [N] or None, distance: the first DISTANCE_SEEDS slabs, float16)."""
        members, gold, kept = [], [], []
        with torch.no_grad():
            for s in range(0, len(self.seeds), generator.batch):
                sigma = generator.field(self.seeds[s : s + generator.batch]).sample_grid(self.reward.grid)
                members.append(self.reward.member_scores(sigma).cpu())
                raw = sigma.cpu().numpy()
                if self.gold is not None:
                    gold += [float(self.gold(v, self.reward.grid, LEVEL)) for v in raw]
                kept += [v.astype(np.float16) for v in raw[:max(DISTANCE_SEEDS - s, 0)]]
        members = torch.cat(members)
        rewards = check_finite(members.mean(dim=1).numpy())
        return dict(rewards=rewards, members=members.numpy(), gold=None if self.gold is None else np.asarray(gold),
            distance=np.stack(kept))

    def check(self):
        """Compare the collateral seeds' latest measurement with the first; the hacking alarm (a sentence) or None.
        The reward's change is the whole panel's mean."""
        self.collateral = collateral.compare(self.before[2], self.after[2])    # No JND: a loss too small to see now
                                                                                # may grow; the alarm stops it early.
        self.collateral['dents'] = collateral.dents(self.before[1], self.after[1], self.collateral_grid)
        self.collateral['plausibility'] = collateral.plausibility(self.before[1], self.after[1], self.collateral_grid,
            family.Family(), measures=(self.before[2], self.after[2]))       # EG3D's data: the world's heads.
        return collateral.alarm(self.collateral, float(self.rewards[-1].mean() - self.rewards[0].mean()))

    def aggregate_name(self):
        kind, lam = self.aggregate
        return kind if kind in ('mean', 'min') else f'{kind}, lambda {lam:g}'

    def proxy_gold_line(self, pg):
        """One sentence of Curves.summary(): the proxy's and gold's gains, the peaks, where the stop rules fall."""
        line = f'proxy {pg["proxy_gain"][-1]:+.2f} sd at distance {pg["distance"][-1]:.3g}'
        if 'gold_gain' in pg:
            peak, fit = pg['observed_peak'], pg['fit']
            line += (f'; gold ({self.gold_taste}) {pg["gold_gain"][-1]:+.2f} sd, its peak {peak["gain"]:+.2f} sd at '
                f'{peak["kimg"]:g} kimg (distance {peak["distance"]:.3g})')
            if fit['peak_distance'] is not None:
                line += (f'; fitted peak at distance {fit["peak_distance"]:.3g}' + (', beyond twice the run\'s reach'
                    if fit['beyond_run'] else ''))
            line += f'; the gold rule stops at {pg["gold_stop_kimg"]} kimg' if pg['gold_stop_kimg'] is not None else ''
        if pg['disagreement_stop_kimg'] is not None:
            line += f'; the disagreement rule stops at {pg["disagreement_stop_kimg"]:g} kimg'
        return line

    @staticmethod
    def flat_params(G):
        """G's parameters as one float32 numpy vector (on the CPU)."""
        return torch.cat([p.detach().float().cpu().flatten() for p in G.parameters()]).numpy()

    def track(self, G_ema, kimg, drawn):
        """Record this tick's proxy, aggregate, disagreement, gold and distances (the first call is the start) in
        self.curves and training_stats (Panel/*)."""
        if not len(self.curves) and self.start_distance_slabs is None:
            self.start_distance_slabs, self.start_params = drawn['distance'], self.flat_params(G_ema)
        members = torch.as_tensor(drawn['members'], dtype=torch.float64)
        row = dict(kimg=float(kimg), **aggregate.summary(members, *self.aggregate),
            gold=None if drawn['gold'] is None else float(np.mean(drawn['gold'])),
            distance=overoptimization.slab_rms(drawn['distance'], self.start_distance_slabs),
            param_distance=overoptimization.parameter_rms(self.flat_params(G_ema), self.start_params))
        if not len(self.curves):
            self.curves.scale = dict(proxy=float(drawn['rewards'].std()) or 1.0, samples=len(drawn['rewards']),
                **({} if drawn['gold'] is None else dict(gold=float(np.std(drawn['gold'])) or 1.0)))
        self.curves.add(**row)
        for name in ('proxy', 'aggregate', 'disagreement', 'gold', 'distance', 'param_distance'):
            if row[name] is not None:
                training_stats.report0(f'Panel/{name}', row[name])

    def peak_reason(self):
        """The stop rule's sentence when this tick passes it (gold passed its peak; without gold, the disagreement
        grew), else None."""
        rows = self.curves.rows
        rule = self.curves.stop(self.peak_margin, self.disagreement_stop, self.peak_noise, self.peak_patience)
        if rule is None:
            return None
        if rule[0] == 'gold':
            return (f'the gold taste {self.gold_taste} passed its peak at {rows["kimg"][rule[1]]:g} kimg: it has lost '
                f'{self.peak_margin:.0%} of its gain since, or fell and its fit peaks behind (--stop-at-peak); the '
                f'peak\'s generator is {os.path.join(self.run_dir, PEAK_PKL)}')
        return (f'the reward members\' disagreement on the panel reached {self.disagreement_stop:g}x its start '
            f'({rows["disagreement"][rule[1]]:.3g} against {rows["disagreement"][0]:.3g}; --stop-at-peak)')

    def preview_slabs(self, generator):
        """Raw sigma (numpy [PREVIEW_SEEDS, *grid]) of the first panel seeds on the reward's grid."""
        return generator.sigma_grid(self.seeds[:PREVIEW_SEEDS], self.reward.grid).numpy()

    def state(self):
        """What a snapshot keeps so that a resumed run continues this evidence (plain numbers and lists)."""
        return dict(seeds=list(self.seeds), reward_sha256=self.reward_sha256, kimg=list(self.kimg),
            rewards=[r.tolist() for r in self.rewards], curves=self.curves.state())

    def mismatch(self, state):
        return state_mismatch(state, self.reward_sha256, self.seeds)

    def restore(self, state, G_start):
        """Continue a snapshot's state(): its ticks, and "before" previews drawn from the run's starting generator;
        returns a one-line summary."""
        if self.mismatch(state) is not None:
            raise ValueError(f'cannot continue the panel: {self.mismatch(state)}')
        self.kimg = [float(k) for k in state['kimg']]
        self.rewards = [np.asarray(r, dtype=np.float64) for r in state['rewards']]
        with self.random_state_kept():
            _rewards, self.start, self.before, drawn = self.start_evidence(G_start, self.kimg[0])
        self.start_distance_slabs, self.start_params = drawn['distance'], self.flat_params(G_start)
        self.curves = overoptimization.Curves(state.get('curves'))
        if self.gold_studies is not None and len(self.curves):          # The start, for this run folder's studies.
            self.gold_studies.keep(G_start, 0, self.curves.rows['kimg'][0], 0.0, 0.0)
        return f'panel: continuing {len(self.kimg)} ticks from {self.kimg[0]:g} kimg to {self.kimg[-1]:g} kimg'

    def finish(self, stopped=None, G_ema=None):
        """Before/after plots and the report (first vs last recorded tick; `stopped`, the reason a run ended early,
        goes into it; G_ema, the generator of the last tick, for the collateral seeds unless this tick measured them);
        returns a summary line, after the alarm's when it is raised (the numbers are in self.summary and
        reward_report.json)."""
        before, after = self.rewards[0], self.rewards[-1]
        summary = dict(first_kimg=self.kimg[0], last_kimg=self.kimg[-1], **reward_change(before, after))
        if stopped is not None:
            summary['stopped'] = stopped
        tables, alarm = [], None
        if self.before is not None and G_ema is not None and (self.after is None or self.after[0] != self.kimg[-1]):
            self.after = self.measure(self.generator(G_ema), self.kimg[-1])
        if self.before is not None and self.after is not None:
            alarm = self.check()
            summary = dict(alarm=alarm, **summary, collateral_seeds=len(self.collateral_seeds),
                collateral_kimg=[self.before[0], self.after[0]], collateral=self.collateral)
            tables = collateral.tables(self.collateral)
        out = lambda name: os.path.join(self.run_dir, name)
        report_plots.plot_histograms(before, after, out('reward_histograms.png'),
            labels=(f'{self.kimg[0]:g} kimg', f'{self.kimg[-1]:g} kimg'))
        report_plots.plot_deltas(before, after, out('reward_deltas.png'))
        report_plots.plot_scatter(before, after, dict(slope=summary['fit_slope'], intercept=summary['fit_intercept']),
            out('reward_scatter.png'))
        if tables:
            picks = collateral.most_changed(self.before[2], self.after[2], PREVIEW_SEEDS)
            chosen = [i for i, _, _ in picks]
            picture = collateral.strip(self.before[1][chosen], self.after[1][chosen], self.collateral_grid,
                [f'seed{self.collateral_seeds[i]:06d}\n{taste} {change:+.1f} sd' for i, taste, change in picks],
                names=('before', 'after'), resolution=PREVIEW_RES)
            summary['before_after_rows'] = [dict(seed=self.collateral_seeds[i], taste=taste, change_sd=float(change))
                for i, taste, change in picks]
        else:
            picture = preview.before_after(self.start, self.end, self.reward.grid,
                [f'seed{s:06d}' for s in self.seeds[:PREVIEW_SEEDS]], names=('before', 'after'), resolution=PREVIEW_RES)
        preview.save_picture(picture, out('before_after.png'))
        pictures = ['before_after.png', 'reward_trajectories.png', 'reward_histograms.png', 'reward_deltas.png',
            'reward_scatter.png']
        headline = [('Reward', f'{self.reward_model_path} (optimised: {self.aggregate_name()})'), ('Panel',
            f'{summary["seeds"]} seeds from {self.kimg[0]:g} to {self.kimg[-1]:g} kimg: mean reward '
            f'{summary["mean_before"]:.3f} -> {summary["mean_after"]:.3f}, {summary["rose"]} rose')]
        if len(self.curves) > 1:
            summary['proxy_gold'] = dict(self.curves.summary(self.peak_margin, self.disagreement_stop,
                noise=self.peak_noise, patience=self.peak_patience),
                aggregate=self.aggregate_name(), gold_taste=self.gold_taste, rows=self.curves.state(),
                peak_snapshot=None if self.peak_kept is None else dict(kimg=self.peak_kept, path=PEAK_PKL))
            overoptimization.plot_curves(summary['proxy_gold'], out('proxy_gold.png'), gold_name=self.gold_taste or 'gold')
            pictures.insert(1, 'proxy_gold.png')
            headline.append(('Proxy and gold', self.proxy_gold_line(summary['proxy_gold'])))
        report_plots.write_report(self.run_dir, 'Reward panel', summary, pictures, name='reward_report', tables=tables,
            headline=headline)
        self.pictures = pictures
        self.summary = summary
        lines = [alarm] if alarm and alarm != stopped else []       # A stopped run's record() said it already.
        lines.append(f"panel: {summary['rose']} of {summary['seeds']} seeds rose, mean change {summary['mean_delta']:+.3f} "
            f"(Cohen's d {summary['cohens_d']:+.2f}), slope {summary['fit_slope']:.2f}; see reward_report.html")
        if self.collateral is not None:
            lines += [collateral.summary_line(self.collateral)] + collateral.describe_truth(self.collateral)
        return '\n'.join(lines)

#----------------------------------------------------------------------------
