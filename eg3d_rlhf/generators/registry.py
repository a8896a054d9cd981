"""Generator families: how each kind of generator file is recognised, loaded and saved, and what its generators can do."""

import dataclasses
import os
import typing

from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.generators.eg3d import EG3DGenerator, is_network_pickle
from eg3d_rlhf.generators.flow import FlowGenerator

#----------------------------------------------------------------------------
# Capabilities: what a family's generators offer beyond the Generator3D interface (generators/base.py). Callers ask
# has(generator, name) or `name in family.capabilities` instead of naming classes; a family may claim only these.

CAPABILITIES = {
    'stages':   'a multi-stage flow pipeline (generator.pipeline: FlowStages with decode/encode; draw(), samples(), '
                'with_pipeline()): Circular-DPO, stage consistency in evaluate, flow_report',
    'guidance': "sampling that a guide can steer at generation time (with_guide() around pipeline.sample's guide): "
                'reward-guided sampling (guidance/flow_guidance.py, tools/guide.py flow)',
    'latents':  'samples drawn from latents a caller may optimise (seed_ws(), latent_field(), raw_images(), G): the GAN '
                'reward phase and reward-guided latent editing (guidance/inverted.py, tools/guide.py eg3d)',
    'camera':   "renders of a seed from any camera with the raw image and depth (camera_views()): generator_demo's views",
}

# The repository's checkpoints/ (checkpoints/README.md says how each bundled file was made). Bundled files ship with the
# code, so they load with the same trust as the code next to them.
CHECKPOINTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'checkpoints')

#----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Family:
    """One kind of generator file and its generators. Every function reads the file it is given; only `load` of a
    family that needs_trust runs code stored in it (the caller asks the user first: cli.network_path)."""
    name:           str                             # Short name: 'eg3d', 'flow' (ids in messages, docs, metadata).
    title:          str                             # Name in messages: 'the EG3D generator is unconditional'.
    description:    str                             # Its files, with article: 'an EG3D network pickle'.
    recognise:      typing.Callable                 # recognise(path) -> bool from a header only; never runs code.
    load:           typing.Callable                 # load(path, device, **options) -> Generator3D; OSError/ValueError.
    owns:           typing.Callable                 # owns(generator) -> bool: is this one of the family's generators?
    save:           typing.Callable = None          # save(path, generator, info=None): a snapshot of a generator of the
                                                    # family in its file format; None: it cannot be saved this way.
    conditions:     typing.Callable = lambda path: None # conditions(path) -> int | None (unconditional), read as data.
    needs_trust:    bool = False                    # Does loading run code stored in the file (--trust-pickle)?
    capabilities:   frozenset = frozenset()         # Names of CAPABILITIES its generators have.
    options:        frozenset = frozenset()         # Keyword options load() takes (tools pass only these).
    bundled:        dict = dataclasses.field(default_factory=dict)  # {--network name: file} shipped in checkpoints/.

    def __post_init__(self):
        unknown = sorted(set(self.capabilities) - set(CAPABILITIES))
        if unknown:
            raise ValueError(f'generator family {self.name!r}: unknown capabilities {unknown}; '
                f'known: {sorted(CAPABILITIES)}')
        if not self.name or not all(callable(f) for f in (self.recognise, self.load, self.owns)):
            raise ValueError(f'generator family {self.name!r} needs a name and callable recognise, load and owns')

    @property
    def files(self):
        """Its files in the plural, without article: 'flow checkpoints'."""
        return self.description.split(' ', 1)[-1] + 's'

#----------------------------------------------------------------------------

FAMILIES = {}                   # {name: Family} in registration order: the first family that recognises a file wins.


def register(family):
    """Add a family (one line per family, below); refuses a duplicate name or a bundled name another family has."""
    if family.name in FAMILIES:
        raise ValueError(f'a generator family named {family.name!r} is already registered')
    taken = sorted(set(family.bundled) & {n for f in FAMILIES.values() for n in f.bundled})
    if taken:
        raise ValueError(f'generator family {family.name!r}: bundled names {taken} are taken')
    FAMILIES[family.name] = family
    return family


def family_of_file(path):
    """The family that recognises the file at `path`; ValueError of one line naming it when none does."""
    for family in FAMILIES.values():
        try:
            if family.recognise(path):
                return family
        except OSError as err:
            raise ValueError(f'{path}: cannot read it ({err.strerror or err})') from None
    raise ValueError(f'{path}: no generator family recognises this file; give {either(FAMILIES.values())}')


def family_of(generator):
    """The family that owns a generator object; ValueError when none does."""
    for family in FAMILIES.values():
        if family.owns(generator):
            return family
    raise ValueError(f'no generator family owns a {type(generator).__name__}')


def has(generator, capability):
    """Does the generator's family have the capability? False for an object no family owns."""
    if capability not in CAPABILITIES:
        raise ValueError(f'unknown capability {capability!r}; known: {sorted(CAPABILITIES)}')
    return any(capability in f.capabilities and f.owns(generator) for f in FAMILIES.values())


def with_capability(capability):
    """[Family] that have the capability, in registration order."""
    return [f for f in FAMILIES.values() if capability in f.capabilities]


def either(families):
    """'an EG3D network pickle or a flow checkpoint': the families' files, for messages."""
    names = [f.description for f in families]
    return ' or '.join([', '.join(names[:-1]), names[-1]] if len(names) > 2 else names)


def bundled_file(name):
    """The file a bundled --network name ('bundled', 'bundled-flow') stands for, or None for any other name."""
    return next((f.bundled[name] for f in FAMILIES.values() if name in f.bundled), None)


def is_bundled(path):
    """Is `path` one of the bundled files (trusted like the code)?"""
    return any(os.path.abspath(path) == os.path.abspath(p) for f in FAMILIES.values() for p in f.bundled.values())

#----------------------------------------------------------------------------
# The families. A new one: one file defining its Generator3D and file functions, and one register() line here (or,
# outside the package, in the program that uses it: tests/helpers/toy_family.py).

register(Family(name='eg3d', title='EG3D', description='an EG3D network pickle', recognise=is_network_pickle,
    load=lambda path, device='cpu', **options: EG3DGenerator.load(path, device, trust=True, **options),
    owns=lambda G: isinstance(G, EG3DGenerator), needs_trust=True, capabilities=frozenset({'latents', 'camera'}),
    options=frozenset({'batch', 'truncation_psi', 'truncation_cutoff', 'fov_degrees'}),
    bundled={'bundled': os.path.join(CHECKPOINTS, 'synthetic-heads64.pkl')}))

register(Family(name='flow', title='flow', description='a flow checkpoint', recognise=flow_heads.is_flow_file,
    load=flow_heads.load_flow, owns=lambda G: isinstance(G, FlowGenerator), save=flow_heads.save_generator,
    conditions=flow_heads.checkpoint_conditions, capabilities=frozenset({'stages', 'guidance'}),
    options=frozenset({'batch', 'draw_batch', 'invariant', 'keep', 'image_res', 'steps', 'sampler'}),
    bundled={'bundled-flow': os.path.join(CHECKPOINTS, 'flow-heads.safetensors')}))

#----------------------------------------------------------------------------
