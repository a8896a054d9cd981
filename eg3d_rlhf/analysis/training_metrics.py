"""EG3D's training-time metrics (fid50k_full, kid50k_full, fid1k_partial, ...) on a local feature network."""

import dataclasses
import json
import math
import os
import re
import time
import typing

import numpy as np
import torch

import dnnlib
from eg3d_rlhf.analysis import image_metrics

#----------------------------------------------------------------------------
# The metrics, by EG3D's names (metrics/metric_main.py): what is measured, on how many generated images, against how
# many real ones. '_full' metrics read the dataset without x-flips; the legacy ones keep the training set's. The
# paper's fid1k_partial (its metric_main) is FID of 1000 generated images against every real image: 'partial' means
# the generated side. fid<N>_partial / kid<N>_partial (N or Nk images) generalise it, so a CPU run can afford one.

@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name:       str                     # The metric's name: its file metric-<name>.jsonl and its key in stats.jsonl.
    kind:       str                     # 'fid' or 'kid'.
    num_gen:    int                     # Generated images.
    max_real:   typing.Optional[int]    # Real images read (the first ones), None = all.
    no_xflip:   bool                    # Read the dataset without x-flips?


KNOWN = {
    'fid50k_full':  MetricSpec('fid50k_full', 'fid', 50000, None, True),
    'kid50k_full':  MetricSpec('kid50k_full', 'kid', 50000, 1000000, True),
    'fid50k':       MetricSpec('fid50k', 'fid', 50000, 50000, False),
    'kid50k':       MetricSpec('kid50k', 'kid', 50000, 50000, False),
}
PARTIAL = re.compile(r'^(fid|kid)([1-9][0-9]*)(k?)_partial$')
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000                # EG3D's KID: 100 subsets of at most 1000 features.
NAMES_HELP = 'fid50k_full, kid50k_full, fid50k, kid50k, or fid<N>_partial / kid<N>_partial (N or Nk generated images against every real one, e.g. fid1k_partial)'


class MetricError(ValueError):
    """A metric name that is not known (one line naming it and the known ones)."""


def metric_spec(name):
    """The MetricSpec of a metric name; MetricError for an unknown one."""
    if name in KNOWN:
        return KNOWN[name]
    m = PARTIAL.match(name)
    if m is None:
        raise MetricError(f'unknown metric {name!r}; choose {NAMES_HELP}')
    num_gen = int(m.group(2)) * (1000 if m.group(3) else 1)
    if num_gen < 2:
        raise MetricError(f'{name}: a distance between feature distributions needs at least 2 generated images')
    return MetricSpec(name, m.group(1), num_gen, None, True)


def parse_metrics(names):
    """MetricSpecs of a list of names (each once, in order); MetricError naming the first unknown one."""
    specs = [metric_spec(name) for name in names]
    if len({s.name for s in specs}) != len(specs):
        raise MetricError(f'a metric is named twice in {",".join(names)}')
    return specs

#----------------------------------------------------------------------------

def gather(features, num_gpus):
    """This process's features [n, D] joined with every other process's (all processes get all of them)."""
    if num_gpus == 1:
        return features
    parts = [None] * num_gpus
    torch.distributed.all_gather_object(parts, features)
    return np.concatenate([p for p in parts if len(p)])


def finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


class TrainingMetrics:
    """Metrics of a generator computed during training, as EG3D's calc_metric/report_metric compute and record them:
    one line per evaluation in metric-<name>.jsonl. training_loop.py builds it by class name on every process; each
    process renders and reads its share of the images.

    The generated images are the same latents and cameras at every evaluation (a fixed seed, drawn without touching
    the training's random streams), so a metric's trajectory shows the generator changing, not the draw. Metrics share
    them: fid1k_partial sees the first 1000 images of fid50k_full's 50000. Real features are read once per run.
    """

    def __init__(self,
        metrics,                    # Metric names (metric_spec()).
        inception,                  # Local feature network file (image_metrics.load_inception: export, TorchScript, pickle).
        dataset_kwargs,             # The training set's constructor kwargs (class_name + options).
        trust_pickle    = False,    # Confirmed trust in the feature network file (loading it can run code).
        run_dir         = '.',      # Where metric-<name>.jsonl go (rank 0).
        device          = 'cpu',
        rank            = 0,        # This process.
        num_gpus        = 1,        # Processes sharing the work.
        batch           = 16,       # Images per generator pass and per feature pass.
        seed            = 0,        # Seed of the generated images' latents, cameras and renderer draws.
    ):
        self.specs = parse_metrics(metrics)
        self.extract = image_metrics.load_inception(inception, trust_pickle=trust_pickle, device=device)
        self.dataset_kwargs = dict(dataset_kwargs)
        self.run_dir, self.device = run_dir, torch.device(device)
        self.rank, self.num_gpus, self.batch, self.seed = int(rank), int(num_gpus), int(batch), int(seed)
        self.real_features = {}                             # (max_real, no_xflip) -> features [n, D].
        self.label_source = None                            # The dataset the cameras are drawn from (made once).

    def features(self, images):
        """Features (float64 numpy [N, D]) of uint8 images [N, C, H, W]; one channel is repeated to three."""
        if images.shape[1] == 1:
            images = images.repeat([1, 3, 1, 1])
        with torch.no_grad():
            return self.extract(images.to(self.device)).double().cpu().numpy()

    def reals(self, spec):
        """Features of the real images a metric reads (every process's share, joined), read once per run."""
        key = (spec.max_real, spec.no_xflip)
        if key not in self.real_features:
            kwargs = dict(self.dataset_kwargs, max_size=None)
            if spec.no_xflip:
                kwargs['xflip'] = False
            dataset = dnnlib.util.construct_class_by_name(**kwargs)
            count = len(dataset) if spec.max_real is None else min(len(dataset), spec.max_real)
            mine = list(range(self.rank, count, self.num_gpus))
            parts = [self.features(torch.from_numpy(np.stack([dataset[i][0] for i in mine[s : s + self.batch]])))
                for s in range(0, len(mine), self.batch)]
            self.real_features[key] = gather(np.concatenate(parts) if parts else np.zeros([0, 0]), self.num_gpus)
        return self.real_features[key]

    @torch.no_grad()
    def fakes(self, G, count):
        """Features of G's first `count` generated images (this process renders every num_gpus-th one)."""
        if self.label_source is None:                               # The cameras come from the dataset's labels.
            self.label_source = dnnlib.util.construct_class_by_name(**dict(self.dataset_kwargs, xflip=False))
        dataset = self.label_source
        labels = np.random.RandomState(self.seed).randint(len(dataset), size=count)
        z = torch.randn([count, G.z_dim], generator=torch.Generator().manual_seed(self.seed))
        mine = list(range(self.rank, count, self.num_gpus))
        parts = []
        cuda = [self.device] if self.device.type == 'cuda' else []
        with torch.random.fork_rng(devices=cuda):                   # The training's random streams stay as they were.
            torch.manual_seed(self.seed + self.rank)                # The renderer's stratified ray samples.
            for s in range(0, len(mine), self.batch):
                rows = mine[s : s + self.batch]
                c = torch.from_numpy(np.stack([dataset.get_label(int(labels[i])) for i in rows])).to(self.device)
                images = G(z=z[rows].to(self.device), c=c)['image']
                parts.append(self.features((images * 127.5 + 128).clamp(0, 255).to(torch.uint8)))
        return gather(np.concatenate(parts) if parts else np.zeros([0, 0]), self.num_gpus)

    def value(self, spec, fake, real):
        fake = fake[:spec.num_gen]
        if spec.kind == 'fid':
            return image_metrics.fid_from_features(fake, real, ddof=0)      # EG3D's FeatureStats: biased covariance.
        return image_metrics.kid_from_features(fake, real, num_subsets=KID_SUBSETS, max_subset_size=KID_SUBSET_SIZE)

    def evaluate(self, G, snapshot_pkl=None):
        """EG3D's result dict of every metric for generator G (G_ema), on every process; rank 0 also appends each to
        run_dir/metric-<name>.jsonl. Values that come out nan or inf are recorded as null."""
        G = G.eval()
        start = time.time()
        fake = self.fakes(G, max(s.num_gen for s in self.specs))
        shared = time.time() - start                                # Rendering is shared; each metric is charged it.
        results = []
        for spec in self.specs:
            begin = time.time()
            value = finite_or_none(self.value(spec, fake, self.reals(spec)))
            total = shared + time.time() - begin
            result = dnnlib.EasyDict(results=dnnlib.EasyDict({spec.name: value}), metric=spec.name, total_time=total,
                total_time_str=dnnlib.util.format_time(total), num_gpus=self.num_gpus)
            if self.rank == 0:
                self.report(result, snapshot_pkl)
            results.append(result)
        return results

    def report(self, result, snapshot_pkl=None):
        """Add EG3D's report_metric line (the result, snapshot_pkl relative to the run directory or null, timestamp)
        to metric-<name>.jsonl; the file is rewritten whole through a temporary one, so a kill never leaves half a line."""
        snapshot = None if snapshot_pkl is None else os.path.relpath(snapshot_pkl, self.run_dir)
        line = json.dumps(dict(result, snapshot_pkl=snapshot, timestamp=time.time()))
        path = os.path.join(self.run_dir, f'metric-{result["metric"]}.jsonl')
        before = open(path, encoding='utf-8').read() if os.path.isfile(path) else ''
        with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
            f.write(before + line + '\n')

#----------------------------------------------------------------------------
