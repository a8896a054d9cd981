"""Label Studio interop: a bank's pairs as <Pairwise> tasks, and Label Studio's JSON export read back as judgements."""

import itertools
import json
import math
import os
import urllib.parse

import numpy as np

import dnnlib
from eg3d_rlhf.data import labeling
from eg3d_rlhf.data.bank import IMAGE_FILE, preview_file
from eg3d_rlhf.data.preferences import LabelError, parse_judgement

#----------------------------------------------------------------------------
# What we export (Label Studio's documented formats: labelstud.io/tags/pairwise, /guide/tasks, /guide/task_format):
#   config.xml   a labeling config: one <Pairwise> over two <Image> tags, plus a "tie" checkbox (<Choices>)
#   tasks.json   [{"data": {"left": URL, "right": URL, "left_id": ID, "right_id": ID, "view": VIEW, "pair": k}}]
# The ids travel in the task data, so importing never reads a URL. Left is our "a", right our "b".
#
# What Label Studio exports (Export > JSON) and we read: a list of tasks, each {"id", "data", "annotations": [{"id",
# "completed_by": user id or {"id", "email", ...}, "created_at": ISO-8601, "lead_time": seconds, "was_cancelled",
# "result": [...]}], ...}. A Pairwise result is {"type": "pairwise", "from_name": "choice", "value": {"selected":
# "left" | "right"}}; Label Studio writes the Pairwise's own name as "to_name" (its editor's example annotation),
# others write the toName list: to_name is not read. Predictions and drafts are not people's judgements: not read.

PAIRWISE, TIE = 'choice', 'tie'                     # Names of the config's control tags.
SIDES = {'left': 'a', 'right': 'b'}                 # Pairwise's "selected" -> our choice.
VIEWS = ('front', 'three_quarter', 'profile', 'image')
LOCAL_FILES = '/data/local-files/?d='               # Label Studio's local storage URL (LOCAL_FILES_DOCUMENT_ROOT + d).

CONFIG = f"""<View>
  <Header value="Which geometry is better? Click it (or tick tie)."/>
  <Pairwise name="{PAIRWISE}" toName="left,right"/>
  <View style="display: flex; gap: 1em;">
    <View style="flex: 1;"><Image name="left" value="$left"/></View>
    <View style="flex: 1;"><Image name="right" value="$right"/></View>
  </View>
  <Choices name="{TIE}" toName="left" choice="multiple" showInline="true">
    <Choice value="Tie: neither is better" alias="{TIE}"/>
  </Choices>
</View>
"""


def picture_file(view):
    """The bank file a view names: preview_<view>.png, or image.png (the RGB render) for 'image'."""
    return IMAGE_FILE if view == 'image' else preview_file(view)


def picture_url(bank, sample_id, view, url_prefix=None, document_root='/'):
    """Where Label Studio finds a sample's picture: URL_PREFIX/<id>/<file> (the bank folder served over HTTP), or the
    local-files URL of its path relative to Label Studio's LOCAL_FILES_DOCUMENT_ROOT. LabelError when outside it."""
    name = picture_file(view)
    if url_prefix is not None:
        return f'{url_prefix.rstrip("/")}/{urllib.parse.quote(sample_id)}/{name}'
    path = os.path.abspath(bank.path(sample_id, name))
    rel = os.path.relpath(path, os.path.abspath(document_root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise LabelError(f'{path} is not under the document root {document_root}; pass the root Label Studio serves '
            '(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) as --document-root, or use --url-prefix')
    return LOCAL_FILES + urllib.parse.quote(rel.replace(os.sep, '/'))


def export_tasks(bank, count, seed=0, view='front', url_prefix=None, document_root='/'):
    """Label Studio tasks of the first `count` pairs in `tools/label.py serve`'s order (labeling.random_pairs, seeded
    the same), every picture checked to exist; LabelError naming a missing one."""
    if view not in VIEWS:
        raise LabelError(f'unknown view {view!r}; choose one of {", ".join(VIEWS)}')
    pairs = itertools.islice(labeling.random_pairs(bank.ids, np.random.RandomState(seed)), count)
    tasks = []
    for k, (a, b) in enumerate(pairs):
        for x in (a, b):
            if not os.path.isfile(bank.path(x, picture_file(view))):
                raise LabelError(f'{bank.path(x, picture_file(view))}: missing; choose another --view or redraw the sample')
        urls = [picture_url(bank, x, view, url_prefix, document_root) for x in (a, b)]
        tasks.append(dict(data=dict(left=urls[0], right=urls[1], left_id=a, right_id=b, view=view, pair=k)))
    return tasks

#----------------------------------------------------------------------------
# Import. Every task and annotation is checked before anything is written; errors name the file, the task's id and
# its index in the list.

def read_export(path):
    """The list of tasks in a Label Studio JSON export; LabelError naming the file when it is not one."""
    try:
        with dnnlib.util.open_regular(path, 'rb', error=LabelError) as f:
            blob = f.read()
    except OSError as err:
        raise LabelError(f'{path}: cannot be read ({err.strerror or err})') from None
    tasks = dnnlib.util.decode_json(blob, f'{path}:', LabelError, hint='; export JSON from Label Studio again (not JSON-MIN or CSV)')
    if not isinstance(tasks, list):
        raise LabelError(f'{path}: expected a list of tasks (Label Studio\'s JSON export), got a {type(tasks).__name__}')
    return tasks


def _task_name(path, task, index):
    tid = task.get('id') if isinstance(task, dict) else None
    return f'{path}: task {tid if isinstance(tid, (int, str)) and not isinstance(tid, bool) else "?"} (index {index})'


def _ls_id(value, key, where):
    """A task's or annotation's id as our labels keep it (ls_task, ls_annotation): an integer (a whole float such as
    7.0 as 7), a string, or None where absent; LabelError naming `where` for nan, inf, a fraction, a bool or any other
    value (nan would be written as NaN, which is no JSON)."""
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise LabelError(f'{where}: "{key}" must be an integer id, got {value!r}; export JSON from Label Studio again')


def annotator_name(completed_by, where):
    """Our annotator name for Label Studio's completed_by: the email where it is a name our files allow
    (labeling.ANNOTATOR), else 'ls-user-<id>'."""
    user = completed_by.get('id') if isinstance(completed_by, dict) else completed_by
    email = completed_by.get('email') if isinstance(completed_by, dict) else None
    if isinstance(email, str) and labeling.ANNOTATOR.fullmatch(email):
        return email
    if isinstance(user, int) and not isinstance(user, bool) and user >= 0:
        return f'ls-user-{user}'
    raise LabelError(f'{where}: "completed_by" must be a user id or an object with an email or id, got {completed_by!r}')


def _choice(annotation, where):
    """'a', 'b', 'tie' or 'skip' of one annotation (cancelled = skipped in Label Studio = our 'skip')."""
    if annotation.get('was_cancelled') is True:
        return 'skip'
    result = annotation.get('result')
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise LabelError(f'{where}: "result" must be a list of objects')
    sides = [r.get('value') for r in result if r.get('type') == 'pairwise']
    ties = [r.get('value') for r in result if r.get('type') == 'choices' and r.get('from_name') == TIE]
    if len(sides) > 1:
        raise LabelError(f'{where}: {len(sides)} pairwise results; one annotation holds one')
    value = sides[0] if sides else None
    selected = value.get('selected') if isinstance(value, dict) else value
    if sides and selected not in SIDES:
        raise LabelError(f'{where}: unknown pairwise selection {selected!r}; expected "left" or "right"')
    tie = any(isinstance(v, dict) and v.get('choices') == [TIE] for v in ties)
    if ties and not tie:
        raise LabelError(f'{where}: unknown "{TIE}" choice {ties[0]!r}; expected {{"choices": ["{TIE}"]}}')
    if sides and tie:
        raise LabelError(f'{where}: both a side ({selected}) and a tie; fix it in Label Studio')
    if not sides and not tie:
        raise LabelError(f'{where}: no selection (neither side nor tie) and not skipped; fix it in Label Studio')
    return TIE if tie else SIDES[selected]


def import_export(path, known_ids):
    """Judgements of every annotation in a Label Studio JSON export of our tasks: a/b from the task data's left_id and
    right_id (which must be ids of the bank), choice from the Pairwise selection, tie box or cancellation, annotator
    from completed_by, time from created_at; extras lead_time (seconds), ls_task and ls_annotation. Each record passes
    preferences' checks; one annotator judging one pair twice is an error. LabelError names the task."""
    known, judgements, seen = set(known_ids), [], {}
    for index, task in enumerate(read_export(path)):
        name = _task_name(path, task, index)
        data = task.get('data') if isinstance(task, dict) else None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ('left_id', 'right_id')):
            raise LabelError(f'{name}: no "data" with "left_id" and "right_id"; import tasks made by tools/label_studio.py export')
        a, b = data['left_id'], data['right_id']
        unknown = [x for x in (a, b) if x not in known]
        if unknown:
            raise LabelError(f'{name}: sample id {unknown[0]!r} is not in the bank; pass the --bank the tasks came from')
        task_id = _ls_id(task.get('id'), 'id', name)
        annotations = task.get('annotations')
        if not isinstance(annotations, list):
            raise LabelError(f'{name}: "annotations" must be a list')
        for k, annotation in enumerate(annotations):
            where = f'{name}, annotation {k}'
            if not isinstance(annotation, dict):
                raise LabelError(f'{where}: expected an object')
            record = dict(a=a, b=b, choice=_choice(annotation, where),
                annotator=annotator_name(annotation.get('completed_by'), where), time=annotation.get('created_at'))
            lead = annotation.get('lead_time')
            if lead is not None:
                if isinstance(lead, bool) or not isinstance(lead, (int, float)) or not math.isfinite(lead) or lead < 0:
                    raise LabelError(f'{where}: "lead_time" must be a finite number of seconds >= 0, got {lead!r}')
                record['lead_time'] = lead
            record.update(ls_task=task_id, ls_annotation=_ls_id(annotation.get('id'), 'id', where))
            j = parse_judgement(json.dumps(record), where)
            key = (frozenset((a, b)), j.annotator)
            if key in seen:
                raise LabelError(f'{where}: {j.annotator} already judged {a} vs {b} in {seen[key]}')
            seen[key] = name.split(': ', 1)[1]
            judgements.append(j)
    return judgements

#----------------------------------------------------------------------------
