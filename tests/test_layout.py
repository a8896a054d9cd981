"""The house as docs/layout.md lays it out: one row per room, imports it allows, no cycles, training/ stays EG3D, thin tools."""

import ast
import os
import re

import pytest

from tests.conftest import REPO

LAYOUT = os.path.join(REPO, 'docs', 'layout.md')
HEADER = ['place', 'holds', 'may import']
SKIP_DIRS = {'__pycache__', 'build'}                    # Beside hidden folders and *.egg-info (.gitignore's).

#----------------------------------------------------------------------------
# docs/layout.md's table.

def cells(line):
    """The cells of one markdown table row."""
    return [c.strip() for c in line.strip().strip('|').split('|')]


def alias(place):
    """How a may-import cell names a place: 'eg3d_rlhf/geometry/' -> 'geometry', 'train.py' -> 'train'."""
    path = place.rstrip('/')
    name = os.path.basename(path)
    if name == '__init__.py':
        return os.path.basename(os.path.dirname(path))
    return name[:-3] if name.endswith('.py') else name


def parse_layout(text):
    """{place: {'holds': cell, 'may': set of places or None for everything}} of the table; ValueError on a bad table."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith('|') and cells(line) == HEADER]
    if len(starts) != 1:
        raise ValueError(f'docs/layout.md: {len(starts)} tables headed "| place | holds | may import |"; want one')
    rows = []
    for line in lines[starts[0] + 2:]:
        if not line.startswith('|'):
            break
        row = cells(line)
        if len(row) != 3:
            raise ValueError(f'docs/layout.md: a row of {len(row)} cells: {line[:80]}')
        rows.append(row)
    places = {p: row for row in rows for p in re.findall(r'`([^`]+)`', row[0])}
    names = {alias(p): p for p in places}
    table = {}
    for place, (_place, holds, may) in places.items():
        said = re.sub(r'\([^()]*\)', '', may)                   # Parentheses say why; they allow nothing.
        if re.search(r'\beverything\b', said):
            allowed = None
        else:
            unknown = [n for n in re.findall(r'`([^`]+)`', said) if alias(n) not in names]
            if unknown:
                raise ValueError(f'docs/layout.md: the row of {place} may import {unknown[0]}, which has no row')
            allowed = {names[alias(n)] for n in re.findall(r'`([^`]+)`', said)}
        table[place] = dict(holds=holds, may=allowed)
    return table


@pytest.fixture(scope='module')
def layout():
    return parse_layout(open(LAYOUT, encoding='utf-8').read())

#----------------------------------------------------------------------------
# The code: modules, their places, their imports.

def modules():
    """{dotted module name: path} of every Python file of the checkout (hidden and build folders left out)."""
    found = {}
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.') and d not in SKIP_DIRS and not d.endswith('.egg-info'))
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
                found[dotted[:-len('.__init__')] if dotted.endswith('.__init__') else dotted] = path
    return found


def place_of(path):
    """The layout row a file belongs to: 'eg3d_rlhf/geometry/', 'eg3d_rlhf/cli.py', 'train.py', 'tools/'."""
    parts = os.path.relpath(path, REPO).split(os.sep)
    if len(parts) == 1:
        return parts[0]
    if parts[0] == 'eg3d_rlhf':
        return '/'.join(parts[:2]) if len(parts) == 2 else f'eg3d_rlhf/{parts[1]}/'
    return parts[0] + '/'


def imports(path, dotted):
    """Every module name an import statement anywhere in the file names (relative ones resolved); `from pkg import mod`
    names pkg.mod, so a submodule importing a sibling through its package is no cycle."""
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
            names.update(f'{base}.{a.name}' for a in node.names)     # A name, or a submodule: resolved by its prefix.
    return names


def import_graph(mods):
    """{module: set of project modules it imports}."""
    def resolve(name):
        while name and name not in mods:
            name = name.rpartition('.')[0]
        return name
    return {m: {r for r in map(resolve, imports(p, m)) if r and r != m} for m, p in mods.items()}


@pytest.fixture(scope='module')
def mods():
    return modules()


@pytest.fixture(scope='module')
def graph(mods):
    return import_graph(mods)

#----------------------------------------------------------------------------
# The checks, as problem lists (so a test can show each one fails).

def room_problems(table, mods):
    """Files whose place has no row, and rows whose place is not in the checkout."""
    problems = sorted({f'{place_of(p)} ({os.path.relpath(p, REPO)}) has no row in docs/layout.md'
        for p in mods.values() if place_of(p) not in table})
    problems += [f'docs/layout.md has a row for {place}, which is not in the checkout' for place in table
        if not os.path.exists(os.path.join(REPO, place))]
    return problems


def import_problems(table, mods, graph):
    """Imports across rooms that the importing room's row does not allow."""
    wrong = []
    for m, deps in sorted(graph.items()):
        place = place_of(mods[m])
        allowed = table[place]['may'] if place in table else set()
        for d in sorted(deps):
            other = place_of(mods[d])
            if other != place and allowed is not None and other not in allowed:
                wrong.append(f'{m} imports {d}: docs/layout.md does not let {place} import {other}')
    return wrong


def unnamed_problems(table, paths, place):
    """Files of a room that its row's holds column does not name (`name` or `name.py`)."""
    named = set(re.findall(r'`([^`]+)`', table[place]['holds'])) if place in table else set()
    return [f'{os.path.relpath(p, REPO)} is not named in the {place} row of docs/layout.md' for p in sorted(paths)
        if os.path.basename(p) not in named and os.path.basename(p)[:-3] not in named]

#----------------------------------------------------------------------------

def test_layout_table_is_the_only_one():
    """The layout lives in docs/layout.md alone (README and the other pages link to it)."""
    for folder in ('.', 'docs'):
        for name in os.listdir(os.path.join(REPO, folder)):
            path = os.path.join(REPO, folder, name)
            if name.endswith('.md') and os.path.abspath(path) != LAYOUT:
                text = open(path, encoding='utf-8').read()
                assert not any(line.startswith('|') and cells(line) == HEADER for line in text.splitlines()), path


def test_every_room_has_a_row(layout, mods):
    assert not room_problems(layout, mods), room_problems(layout, mods)


def test_rooms_import_only_what_layout_allows(layout, mods, graph):
    assert not import_problems(layout, mods, graph), import_problems(layout, mods, graph)


def test_every_tool_benchmark_and_package_module_is_named_in_its_row(layout, mods):
    problems = []
    for place in sorted({place_of(p) for p in mods.values()}):
        if place in ('tools/', 'benchmarks/') or place.startswith('eg3d_rlhf/') and place.endswith('/'):
            paths = [p for p in mods.values() if place_of(p) == place and os.path.basename(p) != '__init__.py']
            problems += unnamed_problems(layout, paths, place)
    assert not problems, problems


def test_the_checks_fail_on_an_undocumented_room_module_or_import(layout, mods, graph):
    """Each check above can fail: a row taken away, an import taken from a row, a tool taken from its row, a bad name."""
    no_rewards = {place: row for place, row in layout.items() if place != 'eg3d_rlhf/rewards/'}
    assert 'eg3d_rlhf/rewards/ (eg3d_rlhf/rewards/contract.py) has no row in docs/layout.md' in room_problems(no_rewards, mods)
    strict = dict(layout)
    strict['eg3d_rlhf/finetune/'] = dict(layout['eg3d_rlhf/finetune/'], may=layout['eg3d_rlhf/finetune/']['may'] - {'eg3d_rlhf/analysis/'})
    assert any(p.startswith('eg3d_rlhf.finetune.panel imports eg3d_rlhf.analysis') for p in import_problems(strict, mods, graph))
    quiet = dict(layout)
    quiet['tools/'] = dict(layout['tools/'], holds=layout['tools/']['holds'].replace('`extract_sigma`', 'extract_sigma'))
    assert unnamed_problems(quiet, [os.path.join(REPO, 'tools', 'extract_sigma.py')], 'tools/') == [
        'tools/extract_sigma.py is not named in the tools/ row of docs/layout.md']
    table = '| place | holds | may import |\n| --- | --- | --- |\n| `a/` | x | `b` (and `c`, said why) |\n| `b.py` | y | nothing |\n'
    assert parse_layout(table) == {'a/': dict(holds='x', may={'b.py'}), 'b.py': dict(holds='y', may=set())}
    with pytest.raises(ValueError, match='may import c, which has no row'):
        parse_layout(table.replace('`b` (and `c`, said why)', '`b`, `c`'))


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


def line_count(path):
    with open(path, encoding='utf-8') as f:
        return sum(1 for _ in f)


def test_no_tool_file_is_over_150_lines():
    lengths = {name: line_count(os.path.join(REPO, 'tools', name)) for name in sorted(os.listdir(os.path.join(REPO, 'tools')))
        if name.endswith('.py')}
    long = {name: n for name, n in lengths.items() if n > 150}
    assert not long, f'tools over 150 lines (move the work into the package): {long}'


def test_train_py_is_under_250_lines():
    n = line_count(os.path.join(REPO, 'train.py'))
    assert n < 250, f'train.py has {n} lines; it holds only the CLI, methods live in eg3d_rlhf/finetune'


def test_readme_is_under_220_lines():
    n = line_count(os.path.join(REPO, 'README.md'))
    assert n <= 100, f'README.md has {n} lines; it is the front door, topics go to docs/guides and results to docs/results'
