"""report_plots.write_report: the page a person opens first, in the order they need it."""

import json

from eg3d_rlhf.analysis import report_plots

#----------------------------------------------------------------------------

def test_the_page_opens_with_the_alarm_the_headline_and_the_first_picture_and_ends_with_every_number(tmp_path):
    summary = dict(alarm='reward hacking suspected: smooth fell', reward=dict(mean_delta=0.5), seeds='8 seeds')
    report_plots.write_report(str(tmp_path), 'Tuned vs original', summary, ['before_after.png', 'other.png'],
        tables=[('A table', ['a', 'b'], [[1, 2]])], headline=[('Trained taste', 'tuned preferred in 7 of 8 pairs')])
    page = (tmp_path / 'report.html').read_text()
    order = ['reward hacking suspected', '<h1>Tuned vs original</h1>', '<th>Command</th>', 'tuned preferred in 7 of 8',
        '<th>Cost</th>', 'src="before_after.png"', '<h2>A table</h2>', 'src="other.png"', '<details>', 'reward.mean_delta']
    places = [page.index(text) for text in order]
    assert places == sorted(places), dict(zip(order, places))
    cost = page[page.index('<th>Cost</th>'):page.index('</tr>', page.index('<th>Cost</th>'))]
    assert 'wall ' in cost and 'CPU ' in cost and 'peak memory ' in cost
    assert 'class=wide' in page[:page.index('src="before_after.png"')] and page.count('class=wide') == 1
    assert json.loads((tmp_path / 'report.json').read_text()) == summary


def test_the_headline_says_the_command_that_ran(monkeypatch):
    monkeypatch.setattr('sys.argv', ['train.py', '--reward=sigma', '--desc', 'a b'])
    assert report_plots.command_line() == "python train.py --reward=sigma --desc 'a b'"
    monkeypatch.setattr('sys.argv', ['/venv/bin/eg3d-rlhf', 'evaluate', '--seeds', '1-3'])
    assert report_plots.command_line() == 'eg3d-rlhf evaluate --seeds 1-3'

#----------------------------------------------------------------------------
