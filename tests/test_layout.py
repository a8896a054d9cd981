"""The house as DESIGN.md lays it out: room imports, no cycles, training/ stays EG3D, thin tools, the flag table."""

import ast
import os
import re

import pytest

from eg3d_rlhf.finetune.config import TAU_DEFAULT, RewardFinetuneConfig, flag_name
from tests.conftest import REPO

PACKAGES = ('dnnlib', 'torch_utils', 'training', 'eg3d_rlhf', 'tools')

# eg3d_rlhf's rooms and the rooms each may import (DESIGN.md); the panel is run evidence, so finetune reads analysis.
# guidance (not in DESIGN.md: reward guidance at generation time) reuses finetune's reward and consistency terms.
ROOMS = {
    'geometry':     set(),
    'generators':   {'geometry'},
    'data':         {'geometry', 'generators'},
    'rewards':      {'geometry'},
    'synthetic':    {'geometry'},
    'analysis':     {'generators', 'rewards', 'data', 'geometry'},
    'finetune':     {'generators', 'rewards', 'data', 'geometry', 'analysis'},
    'guidance':     {'generators', 'rewards', 'data', 'geometry', 'analysis', 'finetune'},
}


def modules():
    """{dotted module name: path} of the project's packages."""
    found = {}
    for package in PACKAGES:
        for folder, _dirs, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if name.endswith('.py'):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
                    found[dotted[:-len('.__init__')] if dotted.endswith('.__init__') else dotted] = path
    return found


def imports(path, dotted):
    """Every module name an import statement anywhere in the file names (relative ones resolved)."""
    is_package = path.endswith('__init__.py')
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = dotted.split('.') if is_package else dotted.split('.')[:-1]
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f'{base}.{a.name}' for a in node.names)
    return names


@pytest.fixture(scope='module')
def graph():
    """{module: set of project modules it imports}."""
    mods = modules()
    def resolve(name):
        while name and name not in mods:
            name = name.rpartition('.')[0]
        return name
    return {m: {r for r in map(resolve, imports(p, m)) if r and r != m} for m, p in mods.items()}


def test_no_import_cycle_among_project_modules(graph):
    # A package's __init__ re-exporting its submodules is an edge, not a cycle, unless a submodule imports it back.
    state, cycle = {}, []
    def visit(m, trail):
        state[m] = 'open'
        for n in sorted(graph[m]):
            if state.get(n) == 'open' and not m.startswith(n + '.'):
                cycle.append(trail[trail.index(n):] + [n])
            elif n not in state:
                visit(n, trail + [n])
        state[m] = 'done'
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycle, ' -> '.join(cycle[0])


def test_rooms_import_only_what_design_allows(graph):
    wrong = []
    for m, deps in graph.items():
        parts = m.split('.')
        if parts[0] != 'eg3d_rlhf' or len(parts) < 3 or parts[1] not in ROOMS:
            continue
        for d in deps:
            room = d.split('.')[1] if d.startswith('eg3d_rlhf.') else None     # 'cli' is no room: rooms never import it.
            if d.split('.')[0] == 'tools' or (room is not None and room != parts[1] and room not in ROOMS[parts[1]]):
                wrong.append(f'{m} imports {d}')
    assert not wrong, wrong


def test_training_stays_eg3d_and_tools_stay_thin():
    for folder, _dirs, files in os.walk(os.path.join(REPO, 'training')):
        for name in files:
            if name.endswith('.py'):
                text = open(os.path.join(folder, name), encoding='utf-8').read()
                assert 'eg3d_rlhf' not in text, os.path.join(folder, name)
    for folder in ('tools', 'benchmarks', 'eg3d_rlhf'):
        for base, _dirs, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if name.endswith('.py'):
                    path = os.path.join(base, name)
                    text = open(path, encoding='utf-8').read()
                    assert 'sys.path.insert' not in text and 'sys.path.append' not in text, path
                    tree = ast.parse(text)
                    assert not any(isinstance(n, ast.ImportFrom) and (n.module or '').split('.')[0] == 'tools'
                        for n in ast.walk(tree)), f'{path} imports another tool; move the shared code into the package'


def test_readme_flag_table_lists_every_reward_flag_with_the_configs_default():
    """README's reward-flag table is documentation of RewardFinetuneConfig: every flag, each literal default equal."""
    rows = dict(re.findall(r'^\| `(--[a-z-]+)` \| ([^|]+?) \|', open(os.path.join(REPO, 'README.md'), encoding='utf-8').read(), re.M))
    for f in RewardFinetuneConfig.flags():
        name = flag_name(f.name)
        assert name in rows, f'README.md has no row for {name}'
        cell = rows[name].strip('`')
        default = TAU_DEFAULT if f.name == 'tau' else f.default
        if isinstance(default, bool):
            assert cell == ('on' if default else 'off'), name
        elif isinstance(default, (int, float)):
            assert float(cell) == default, name
        elif isinstance(default, str):
            assert cell == default, name
