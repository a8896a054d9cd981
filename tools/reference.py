"""Write docs/reference/ from the code: every command's options, each method's settings, the registries."""

import importlib
import os

import click

import dnnlib
from eg3d_rlhf import reference
from eg3d_rlhf.finetune import methods

#----------------------------------------------------------------------------

def pages():
    """{file name: text} of every reference page: one per method command, one per tool, the registries, an index."""
    console, train = importlib.import_module('tools.__main__'), importlib.import_module('train')
    found = {}
    index = ['# Reference', '', 'Every command\'s options, generated from the code by `eg3d-rlhf reference`: edit the '
        'code (a config\'s fields, a click option\'s help), then run it. The script tools/NAME.py takes the same options as '
        '`eg3d-rlhf NAME`, and train.py takes the options of every method.', '', '| command | what it does |',
        '| --- | --- |']
    for method in methods.METHODS.values():
        name, command = f'train-{method.command_name}', train.method_command(method)
        found[f'{name}.md'] = reference.method_page(method, command, f'eg3d-rlhf train {method.command_name}')
        index.append(f'| [`eg3d-rlhf train {method.command_name}`]({name}.md) | {reference.summary(command, sentence=True)} |')
    for name, (module, _path) in console.commands().items():
        if name == 'train':
            continue
        command = importlib.import_module(module).main
        found[f'{name}.md'] = reference.command_page(command, f'eg3d-rlhf {name}')
        index.append(f'| [`eg3d-rlhf {name}`]({name}.md) | {reference.summary(command, sentence=True)} |')
    index += ['', '[Registries](registries.md): methods, Circular-DPO\'s variants, preference losses, reward kinds, '
        'generator families, tastes.', '']
    found['registries.md'] = reference.registries_page()
    found['README.md'] = '\n'.join(index)
    return found


def stale(outdir, found):
    """Names of the pages in outdir that differ from `found` or are missing, and .md files there it would not write."""
    present = {n for n in os.listdir(outdir) if n.endswith('.md')} if os.path.isdir(outdir) else set()
    differ = []
    for name, text in found.items():
        if name not in present:
            differ.append(name)
            continue
        with open(os.path.join(outdir, name), encoding='utf-8') as f:
            if f.read() != text:
                differ.append(name)
    return differ + sorted(present - set(found))

#----------------------------------------------------------------------------

@click.command()
@click.option('--outdir', default=os.path.join('docs', 'reference'), show_default=True, metavar='DIR',
    help='Folder of the pages')
@click.option('--check', is_flag=True, help='Write nothing; exit 1 naming every page that is stale, missing or extra')
def main(outdir, check):
    """Write docs/reference/: one page per command with every option (flags, metavar, default, range, help as --help
    shows them), each method's settings that are not flags, and the registries (methods, variants, losses, reward
    kinds, generator families, tastes). The pages are generated: a test fails when one is stale.

    \b
    eg3d-rlhf reference
    eg3d-rlhf reference --check
    """
    found = pages()
    differ = stale(outdir, found)
    if check:
        if differ:
            raise click.ClickException(f'{outdir} is stale ({", ".join(differ)}); run: eg3d-rlhf reference')
        print(f'{outdir}: {len(found)} pages, all current')
        return
    os.makedirs(outdir, exist_ok=True)
    for name in differ:
        if name in found:
            with dnnlib.util.atomic_write(os.path.join(outdir, name), 'w', encoding='utf-8') as f:
                f.write(found[name])
    extra = [n for n in differ if n not in found]
    print(f'{outdir}: {len(found)} pages, {len(differ) - len(extra)} written' + (f'; not made by this command, left '
        f'alone: {", ".join(extra)}' if extra else ''))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
