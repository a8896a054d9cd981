"""docs/reference/: generated from the code, current, complete, and no page over 20 KB."""

import subprocess
import sys

from click.testing import CliRunner

import train
from eg3d_rlhf.finetune import methods
from eg3d_rlhf.finetune.options import flags_of
from tests.helpers.cli import refused_in_one_line
from tools import reference

#----------------------------------------------------------------------------

PAGES = reference.pages()


def test_the_pages_in_the_repository_are_current():
    # A fresh interpreter: other tests register toy losses and families in this one, which its pages would list.
    result = subprocess.run([sys.executable, 'tools/reference.py', '--check'], capture_output=True, text=True)
    assert result.returncode == 0, f'{result.stderr}(run: eg3d-rlhf reference, and commit docs/reference/)'


def test_a_stale_missing_or_extra_page_is_named(tmp_path):
    assert CliRunner().invoke(reference.main, ['--outdir', str(tmp_path / 'ref')]).exit_code == 0
    (tmp_path / 'ref' / 'label.md').write_text('# old\n')
    (tmp_path / 'ref' / 'evaluate.md').unlink()
    (tmp_path / 'ref' / 'mine.md').write_text('# mine\n')
    result = CliRunner().invoke(reference.main, ['--check', '--outdir', str(tmp_path / 'ref')])
    refused_in_one_line(result, 'is stale (evaluate.md, label.md, mine.md); run: eg3d-rlhf reference')
    result = CliRunner().invoke(reference.main, ['--outdir', str(tmp_path / 'ref')])
    assert result.exit_code == 0 and 'left alone: mine.md' in result.output
    assert (tmp_path / 'ref' / 'label.md').read_text() == reference.pages()['label.md']
    assert (tmp_path / 'ref' / 'evaluate.md').read_text() == reference.pages()['evaluate.md']
    assert (tmp_path / 'ref' / 'mine.md').read_text() == '# mine\n'                  # Not ours: kept.
    result = CliRunner().invoke(reference.main, ['--check', '--outdir', str(tmp_path / 'ref')])
    refused_in_one_line(result, 'is stale (mine.md)')


def test_every_setting_of_every_method_and_every_option_of_every_tool_is_on_its_page():
    for method in methods.METHODS.values():
        page = PAGES[f'train-{method.command_name}.md']
        for f in method.config.flags():
            assert all(f'{flag}' in page for flag in flags_of(f)), (method.name, f.name)
        for f in method.config.__dataclass_fields__.values():
            assert f.metadata['flag'] or f'`{f.name}`' in page, (method.name, f.name)
        for p in train.method_command(method).params:
            assert p.hidden or p.opts[0] in page, (method.name, p.name)
    assert len(PAGES) >= 25 and 'registries.md' in PAGES and 'README.md' in PAGES
    assert '--lambda-r' in PAGES['train-eg3d.md'] and '--lambda-r' not in PAGES['train-circular-dpo.md']
    assert '--variant, --ablation' in PAGES['train-circular-dpo.md'] and '`demo_seeds`' in PAGES['train-circular-dpo.md']
    assert '`front-to-back` | j |' in PAGES['registries.md']


def test_no_page_is_over_20_kb():
    sizes = {name: len(text.encode()) for name, text in PAGES.items()}
    assert max(sizes.values()) <= 20_000, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]

#----------------------------------------------------------------------------
