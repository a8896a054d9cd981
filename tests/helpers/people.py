"""Scripted people for the online rounds: tools/rounds.py --annotator people as a process, and invited annotators who
judge its pairs page over HTTP, each pair by a taste's noise-free choice on the bank's slabs."""

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time

from eg3d_rlhf.data import annotators
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.study_player import Page

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVING = re.compile(r'serving http://[^:]+:(\d+)/: \d+ pairs of (\S+) for')


def judge_pairs(port, token, bank_dir, taste, limit=None):
    """Judge what the page at 127.0.0.1:port shows (as the invitee of `token`) until it shows nothing or `limit`
    pairs are judged: 'a' when the taste scores a's slab higher, 'tie' when equal. Returns the count of replies
    received (a judgement whose reply the closing server cut off is not counted); stops quietly when the server goes."""
    page, scores, sent = Page(f'http://127.0.0.1:{port}/', token), annotators.taste_scores(taste, Bank(bank_dir)), 0
    try:
        state = page.request('GET', '/api/state')
        while state.get('current') and (limit is None or sent < limit):
            a, b = state['current']['a'], state['current']['b']
            choice = 'a' if scores[a] > scores[b] else 'b' if scores[a] < scores[b] else 'tie'
            state = page.request('POST', '/api/judge', dict(a=a, b=b, choice=choice))['state']
            sent += 1
    except (OSError, RuntimeError, http.client.HTTPException, ValueError):  # The round ended (or the runner was
                                                         # killed) meanwhile, perhaps in the middle of a reply.
        pass
    return sent


class Runner:
    """tools/rounds.py ARGS as a process; each page it serves is judged by `tokens` ({name: token}) in threads, each
    at most `limits[round]` pairs there (None: no limit). The process's output is kept in `lines`."""

    def __init__(self, args, tokens, taste, limits=None):
        self.proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'tools', 'rounds.py'), *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, start_new_session=True)
        self.tokens, self.taste, self.limits = tokens, taste, dict(limits or {})
        self.lines, self.judged, self.pages = [], [], 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            found = SERVING.search(line)
            if found:
                limit = self.limits.get(self.pages)
                self.pages += 1
                for token in self.tokens.values():
                    threading.Thread(target=lambda t=token: self.judged.append(judge_pairs(int(found.group(1)), t,
                        found.group(2), self.taste, limit)), daemon=True).start()

    def wait(self, timeout=600):
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code

    def kill_when(self, ready, timeout=600):
        """kill -9 the runner once ready() holds; True when it was still running then."""
        end = time.monotonic() + timeout
        while not ready() and self.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        alive = self.proc.poll() is None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.reader.join(10)
        return alive

    def output(self):
        return ''.join(self.lines)
