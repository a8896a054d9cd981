"""Label Studio interop: export a bank's pairs as <Pairwise> tasks, import Label Studio's JSON export as judgements."""

import json
import os

import click

import dnnlib
from eg3d_rlhf.cli import OUT_DIR, OUT_FILE, SEED, force_option, one_line_errors, open_bank, refuse_overwrite
from eg3d_rlhf.data import label_studio as ls
from eg3d_rlhf.data.label_pages import pair_target
from eg3d_rlhf.data.preferences import LabelError, load_judgements, write_judgements

#----------------------------------------------------------------------------

@click.group()
def main():
    """Label pairs in Label Studio (its <Pairwise> tag): export tasks, import the judgements people made there."""


@main.command()
@click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='Bank whose pairs to export')
@click.option('--outdir', required=True, type=OUT_DIR, metavar='DIR', help='Where config.xml and tasks.json go')
@click.option('--pairs', 'target', type=click.IntRange(min=1), metavar='N',
    help='Pairs to export, in the order `label.py serve` shows them  [default: 200, or every pair of a smaller bank]')
@click.option('--seed', type=SEED, default=0, show_default=True, help='Pair order seed (as `label.py serve --seed`)')
@click.option('--view', type=click.Choice(ls.VIEWS), default='front', show_default=True,
    help='Picture shown: a geometry preview, or image (the RGB render)')
@click.option('--url-prefix', metavar='URL', help='Pictures as URL/<id>/<file> (the bank folder served over HTTP); '
    'default: Label Studio local files, /data/local-files/?d=<path under --document-root>')
@click.option('--document-root', metavar='DIR', help='Label Studio\'s LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT  [default: /]')
@force_option
@click.option('--dry-run', is_flag=True, help='Draw and check the pairs, print what would be written; write nothing')
def export(bank_dir, outdir, target, seed, view, url_prefix, document_root, force, dry_run):
    """Write DIR/config.xml (the labeling config: paste it into the project's Labeling Interface) and DIR/tasks.json
    (import it as tasks). Each task carries its samples' ids (left_id, right_id), so `import` never reads URLs.

    \b
    python tools/label_studio.py export --bank out/bank --outdir out/label-studio --pairs 300
    """
    if url_prefix is not None and document_root is not None:
        raise click.UsageError('--url-prefix and --document-root are two ways to reach the pictures: pass one')
    bank = open_bank(bank_dir, check_slabs=False)       # People see pictures only.
    target = pair_target(target, len(bank))
    files = [os.path.join(outdir, name) for name in ('config.xml', 'tasks.json')]
    refuse_overwrite(*files, force=force)
    with one_line_errors(LabelError):
        tasks = ls.export_tasks(bank, target, seed=seed, view=view, url_prefix=url_prefix,
            document_root=document_root or '/')
    if dry_run:
        print(f'would write {len(tasks)} tasks of {bank_dir} ({view} pictures, e.g. {tasks[0]["data"]["left"]}) '
            f'and the labeling config to {outdir}')
        return
    os.makedirs(outdir, exist_ok=True)
    with dnnlib.util.atomic_write(files[0], 'w', encoding='utf-8') as f:
        f.write(ls.CONFIG)
    with dnnlib.util.atomic_write(files[1], 'w', encoding='utf-8') as f:
        json.dump(tasks, f, indent=1)
        f.write('\n')
    print(f'wrote {len(tasks)} tasks ({view} pictures, e.g. {tasks[0]["data"]["left"]}) and the labeling config to {outdir}')


@main.command('import')
@click.option('--export', 'export_path', required=True, type=click.Path(dir_okay=False), metavar='JSON',
    help='Label Studio\'s JSON export (Export > JSON) of tasks made by `export`')
@click.option('--bank', 'bank_dir', required=True, metavar='BANK', help='The bank the tasks came from (ids are checked)')
@click.option('--out', required=True, type=OUT_FILE, metavar='JSONL', help='Judgement file to write (atomically; an existing one needs --force)')
@force_option
@click.option('--dry-run', is_flag=True, help='Read and check the export, print what would be written; write nothing')
def import_(export_path, bank_dir, out, force, dry_run):
    """Convert Label Studio's annotations into the JSONL preference format: left = a, right = b; the Pairwise
    selection gives choice a or b, the tie box "tie", a skipped (cancelled) annotation "skip". The annotator is
    completed_by's email (or ls-user-<id>), the time created_at; lead_time, ls_task and ls_annotation are kept. Every
    task is checked first (errors name the task's id and index); nothing is written unless all are good.

    \b
    python tools/label_studio.py import --export project-1-at-2026-01-01.json --bank out/bank --out labels/studio.jsonl
    """
    refuse_overwrite(out, force=force, inputs={'--export': export_path, '--bank': bank_dir})
    bank = open_bank(bank_dir, check_slabs=False)
    with one_line_errors(LabelError):
        judgements = ls.import_export(export_path, bank.ids)
    if not judgements:
        raise click.ClickException(f'{export_path}: no annotations; label some tasks in Label Studio, then export again')
    people = sorted({j.annotator for j in judgements})
    summary = f'{len(judgements)} judgements by {len(people)} annotator(s) ({", ".join(people[:5])}{", ..." * (len(people) > 5)})'
    if dry_run:
        print(f'would write {summary} to {out}')
        return
    with one_line_errors(LabelError):
        write_judgements(out, judgements)
        load_judgements(out, known_ids=bank.ids)                        # Read back as training will read it.
    print(f'wrote {summary} to {out}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
