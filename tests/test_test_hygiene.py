"""Test hygiene: no test file imports another; shared builders live in tests/helpers/, shared fixtures in conftest."""

import ast
import glob
import os
import re

TESTS = os.path.dirname(os.path.abspath(__file__))
DOTTED_TEST_NAME = re.compile(r'tests\.test_\w+(\.\w+)*')      # A module or class by name, as import_module takes it.

#----------------------------------------------------------------------------

def imported_test_modules(source, own=None):
    """[(line, 'test_x')] for every tests.test_x module `source` imports (at top level or inside a function) by an
    import statement or by a string that is only a dotted name (import_module's, dnnlib's class_name); not `own`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:                        # from .test_x import y
            names = ['tests.' + node.module] if node.module else ['tests.' + a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == 'tests':             # from tests import test_x
            names = ['tests.' + a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED_TEST_NAME.fullmatch(node.value):
            names = [node.value]
        for name in names:
            parts = name.split('.')
            if parts[0] == 'tests' and len(parts) > 1 and parts[1].startswith('test_') and parts[1] != own:
                found.append((node.lineno, parts[1]))
    return found


def checked_files():
    """Every test file, plus conftest.py and tests/helpers/ (which must not lean on test files either)."""
    helpers = glob.glob(os.path.join(TESTS, 'helpers', '**', '*.py'), recursive=True)
    return sorted(glob.glob(os.path.join(TESTS, 'test_*.py')) + helpers + [os.path.join(TESTS, 'conftest.py')])

#----------------------------------------------------------------------------

def test_no_test_file_imports_another():
    problems = []
    for path in checked_files():
        rel = os.path.relpath(path, os.path.dirname(TESTS))
        with open(path, encoding='utf-8') as f:
            source = f.read()
        own = os.path.basename(path)[:-3]
        problems += [f'{rel}:{line} imports tests.{module}' for line, module in imported_test_modules(source, own)]
    assert not problems, ('test files must not import each other; move the shared builder to tests/helpers/ or the '
        'shared fixture to tests/conftest.py:\n  ' + '\n  '.join(problems))


def test_the_check_finds_every_way_of_importing_a_test_file():
    found = lambda source: [module for _, module in imported_test_modules(source, own='test_self')]
    assert found('from tests.test_bank import write_bank') == ['test_bank']
    assert found('from tests.test_label import served  # noqa: F401') == ['test_label']
    assert found('import tests.test_train') == ['test_train']
    assert found('import tests.test_train as t') == ['test_train']
    assert found('from tests import conftest, test_flow') == ['test_flow']
    assert found('from .test_evaluate import tiny_pair') == ['test_evaluate']
    assert found('from . import test_evaluate') == ['test_evaluate']
    assert found('def f():\n    from tests.test_train import lookup\n    return lookup') == ['test_train']
    assert found('importlib.import_module("tests.test_flow_tools")') == ['test_flow_tools']
    assert found("dict(class_name='tests.test_finetune.ConstantPhase')") == ['test_finetune']
    assert found('from tests.helpers.banks import write_bank\nfrom tests.conftest import REPO\nimport test_x') == []
    assert found("dict(class_name='tests.test_self.ConstantPhase')") == []          # Its own module.
    assert found('"""A docstring naming tests.test_bank.write_bank in a sentence."""') == []

#----------------------------------------------------------------------------
