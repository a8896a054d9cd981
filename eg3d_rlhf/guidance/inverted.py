"""An EG3D generator whose seeds are reward-guided inversions of another's: every tool can compare or bank them."""

import torch

from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.guidance.inversion import invert, render
from torch_utils import misc


class InvertedEG3D(EG3DGenerator):
    """Seed s's latents are those invert() finds from s's own ws and frontal render, with the reward at
    `reward_weight`: images(), field() and every Generator3D method then show the edited sample, rendered exactly as
    the original generator renders its seeds (same G, camera and truncation). Inversions are run once per seed, in
    batches, and kept. Pivotal tuning (invert's tune_steps) gives each batch its own G, so it is not offered here."""

    def __init__(self,
        generator,                  # EG3DGenerator whose seeds are edited (not modified).
        reward,                     # contract.Reward guiding the edit.
        reward_weight   = 1.0,      # Weight of the clipped reward against the image MSE.
        progress        = None,     # progress(1) after each inversion step.
        **invert_kwargs,            # invert()'s other settings: sigma_weight, steps, lr, space, resolution, clip, ...
    ):
        super().__init__(generator.G, path=generator.path, truncation_psi=generator.truncation_psi,
            truncation_cutoff=generator.truncation_cutoff, fov_degrees=generator.fov_degrees, batch=generator.batch)
        if invert_kwargs.get('tune_steps'):
            raise ValueError('InvertedEG3D edits latents only (tune_steps would give each batch its own G)')
        self.original, self.reward, self.reward_weight = generator, reward, float(reward_weight)
        self.invert_kwargs, self.progress, self.found, self.history = dict(invert_kwargs), progress, {}, {}

    def seed_ws(self, seeds):
        """The edited latents [len(seeds), num_ws, w_dim] of seeds (inverted on first use)."""
        seeds = [int(s) for s in seeds]
        missing = list(dict.fromkeys(s for s in seeds if s not in self.found))
        for start in range(0, len(missing), self.batch):
            chunk = missing[start : start + self.batch]
            ws = torch.cat([self.original.seed_ws([s]) for s in chunk])    # One seed per pass, as images() maps them.
            cameras = self.original.camera(len(chunk)).clone()
            with torch.no_grad():
                target = render(self.original, ws, cameras, self.invert_kwargs.get('resolution'))
            with torch.enable_grad():                           # Callers score samples under no_grad.
                result = invert(self.original, target, cameras, ws, reward=self.reward, reward_weight=self.reward_weight,
                    progress=self.progress, **self.invert_kwargs)
            self.found.update(zip(chunk, result.ws))
            self.history.update((s, result.final) for s in chunk)
        ws = torch.stack([self.found[s] for s in seeds])
        misc.assert_shape(ws, [len(seeds), self.G.backbone.num_ws, self.G.w_dim])
        return ws

    def identity(self):
        found = super().identity()
        found['guidance'] = (f'reward-guided inversion, reward weight {self.reward_weight:g}, '
            + ', '.join(f'{k} {v}' for k, v in sorted(self.invert_kwargs.items())))
        return found
