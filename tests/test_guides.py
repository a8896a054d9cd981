"""docs/guides/ and docs/reference/: short pages in present tense, short sentences; no page outside docs/results/ dates
itself, names a commit or tells history."""

import glob
import os
import re

import numpy as np

from tests.conftest import REPO

#----------------------------------------------------------------------------

GUIDES = sorted(glob.glob(os.path.join(REPO, 'docs', 'guides', '*.md')))
PAGES = GUIDES + sorted(glob.glob(os.path.join(REPO, 'docs', 'reference', '*.md')))
CURRENT = [os.path.join(REPO, 'README.md'), *(p for p in sorted(glob.glob(os.path.join(REPO, 'docs', '**', '*.md'),
    recursive=True)) if os.sep + 'results' + os.sep not in p)]            # Every page but the dated results.
HISTORY = re.compile(r'\b(as it was before|used to be|no longer|kept for reference|superseded|the code of the morning)\b',
    re.I)
DATE = re.compile(r'(?<![\w/-])20\d\d-\d\d-\d\d(?![\w-]|\.\w)')        # Not in a file name.
HASH = re.compile(r'\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b')


def prose(text):
    """The page's paragraphs of prose: no code blocks, tables, headings or list markers."""
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    paragraphs = [p for p in re.split(r'\n\s*\n', text)]
    kept = []
    for p in paragraphs:
        lines = [l for l in p.splitlines() if not l.startswith(('|', '#', '!['))]
        if lines:
            kept.append(' '.join(re.sub(r'^\s*(- |\d+\. )', '', l) for l in lines))
    return kept


def sentences(paragraph):
    """Sentences of a paragraph, code spans and links counted as one word each."""
    flat = re.sub(r'`[^`]*`', 'CODE', re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', paragraph))
    return [s for s in re.split(r'(?<=[.!?:])\s+(?=[A-Z`(])', flat) if s.strip()]


def test_there_are_guides_and_a_glossary():
    names = {os.path.basename(p) for p in GUIDES}
    assert {'reward-finetuning.md', 'circular-dpo.md', 'glossary.md', 'README.md'} <= names


def test_no_guide_or_reference_page_is_over_20_kb():
    for path in PAGES:
        assert len(open(path, 'rb').read()) <= 20_000, os.path.relpath(path, REPO)


def test_no_page_outside_results_has_dates_hashes_or_history():
    assert set(PAGES) < set(CURRENT) and os.path.join(REPO, 'docs', 'layout.md') in CURRENT
    for path in CURRENT:
        text = open(path, encoding='utf-8').read()
        where = os.path.relpath(path, REPO)
        assert not DATE.search(text), (where, DATE.search(text))
        assert not HASH.search(text), (where, HASH.search(text))
        assert not HISTORY.search(text), (where, HISTORY.search(text))


def test_guides_use_short_sentences_and_paragraphs():
    for path in GUIDES:
        paragraphs = prose(open(path, encoding='utf-8').read())
        if not paragraphs:                                                  # The glossary: one table.
            continue
        words = [len(s.split()) for p in paragraphs for s in sentences(p)]
        assert np.mean(words) <= 30, (path, np.mean(words))
        assert max(len(p) for p in paragraphs) <= 1500, (path, max(paragraphs, key=len)[:200])


def test_the_checks_catch_what_they_look_for():
    assert HASH.search('measured at 923e542 today') and not HASH.search('the 1000007 seeds') and not HASH.search('a deadbeef')
    assert DATE.search('on 2026-11-26.') and not DATE.search('inception-2015-12-05.pkl') and HISTORY.search('Run it as it was before the sigmoid default')
    assert [len(s.split()) for s in sentences('One two three. Four `five six` seven.')] == [3, 3]

#----------------------------------------------------------------------------
