"""The labeling page's 3D view: eg3d_rlhf.data.mesh_file, the server's mesh route, and mesh_viewer.js in Chromium."""

import gzip
import http.client
import json
import os
import struct
import threading

import numpy as np
import PIL.Image
import pytest

from eg3d_rlhf.data import label_server
from eg3d_rlhf.data import mesh_file as M
from eg3d_rlhf.data.bank import Bank, BankError
from eg3d_rlhf.geometry import mesh, preview
from eg3d_rlhf.geometry.sigma import slab_grid
from tests.helpers.banks import balls_volume, face_volume, write_bank
from tests.helpers.browser import chromium_driver
from tests.helpers.label import PICTURES, Running, fake_bank, read_lines, request, session

#----------------------------------------------------------------------------
# The file.

BOX = (np.array([-0.25, -0.2, -0.1]), np.array([0.25, 0.3, 0.4]))


def random_mesh(vertices, faces, seed=0):
    rnd = np.random.RandomState(seed)
    verts = BOX[0] + rnd.rand(vertices, 3) * (BOX[1] - BOX[0])
    if vertices:
        verts[:3] = [BOX[0], BOX[1], (BOX[0] + BOX[1]) / 2]                 # The box's corners are exact.
    return verts, rnd.randint(0, max(vertices, 1), size=(faces, 3))


@pytest.mark.parametrize('vertices, faces, index_bytes', [(1000, 3000, 2), (65536, 10, 2), (70000, 5000, 4), (0, 0, 2)])
def test_file_round_trips_within_the_quantisation_error(vertices, faces, index_bytes):
    verts, tris = random_mesh(vertices, faces)
    data = M.encode(verts, tris, *BOX)
    assert len(data) == 40 + 6 * vertices + (-6 * vertices % 4) + 3 * faces * index_bytes
    v, f, lo, hi = M.decode(data)
    assert np.array_equal(f, tris) and np.allclose(lo, BOX[0]) and np.allclose(hi, BOX[1])
    bound = M.max_error(*BOX) + 1e-7                                      # float32 positions on top.
    assert v.shape == verts.shape and (np.abs(v - verts) <= bound).all()
    if vertices:
        assert (np.abs(v - verts).max(axis=0) > bound / 4).all()            # It is quantised, not exact.


def test_decode_refuses_what_is_not_a_mesh_file():
    verts, tris = random_mesh(100, 50)
    good = M.encode(verts, tris, *BOX)
    header = bytearray(good[:40])
    bad_index = bytearray(good)
    bad_index[-2:] = struct.pack('<H', 60000)                               # The last index jumps past vertex 99.
    nan_box = bytearray(good)
    nan_box[16:20] = struct.pack('<f', float('nan'))
    cases = [(good[:30], 'shorter than the 40-byte header'), (b'JUNK' + good[4:], 'not a version-1 mesh file'),
        (good[:4] + struct.pack('<I', 2) + good[8:], 'not a version-1 mesh file'), (good[:-1], 'its header says'),
        (good + b'\0', 'its header says'), (bytes(header), 'its header says'), (bytes(bad_index), 'names vertex'),
        (bytes(nan_box), 'box is not finite')]
    for data, message in cases:
        with pytest.raises(M.MeshFileError, match=message) as err:
            M.decode(data, name='x.bin')
        assert str(err.value).startswith('x.bin: ')
    with pytest.raises(ValueError, match='names a vertex'):
        M.encode(verts, tris + 100, *BOX)
    with pytest.raises(ValueError, match='nan or inf'):
        M.encode(np.full([3, 3], np.nan), [[0, 1, 2]], *BOX)

#----------------------------------------------------------------------------
# A bank sample's surface.

RES = 64
BALL = ((0.03, 0.02, 0.15), 0.1)                                            # Inside the slab of slab_grid(64).


def mesh_bank(root, volumes, pictures=True, meta=None):
    """A bank of {id: raw slab on slab_grid(RES)} with flat pictures beside them (as the page shows) and `meta`
    entries added to every meta.json."""
    write_bank(root, volumes, RES)
    for i, sample_id in enumerate(volumes):
        folder = os.path.join(root, sample_id)
        for k, name in enumerate(PICTURES if pictures else ()):
            PIL.Image.new('RGB', (32, 32), (60 * i % 256, 60 * k, 200)).save(os.path.join(folder, name))
        with open(os.path.join(folder, 'meta.json')) as f:
            data = json.load(f)
        with open(os.path.join(folder, 'meta.json'), 'w') as f:
            json.dump({**data, **(meta or {})}, f)
    with open(os.path.join(root, 'bank.json'), 'w') as f:
        json.dump(dict(note='test'), f)
    return str(root)


def test_sample_mesh_is_the_surface_the_previews_show(tmp_path):
    grid = slab_grid(RES)
    ball = balls_volume(grid, [BALL])
    bank = Bank(mesh_bank(tmp_path / 'bank', dict(ball=ball, face=face_volume(grid, 0.05)), pictures=False))
    verts, faces, lo, hi = M.sample_mesh(bank, 'ball')
    assert np.allclose(lo, grid.index_to_world(np.zeros(3))) and np.allclose(hi, grid.index_to_world(np.array(grid.shape) - 1))
    radius = np.linalg.norm(verts - BALL[0], axis=1)
    assert abs(radius.mean() - BALL[1]) < grid.voxel_size / 4                 # The level-10 surface.
    # The front still (what sample_bank writes) and the mesh seen from +z cover the same pixels' box.
    res = 96
    front = preview.render_views(ball, grid, level=10.0, views=('front',), resolution=res)['front'] < 250
    centre, frame = (lo + hi) / 2, np.max(hi - lo) / 2
    cols = np.rint((verts[:, 0] - centre[0] + frame) / (2 * frame) * (res - 1)).astype(int)
    rows = np.rint((centre[1] + frame - verts[:, 1]) / (2 * frame) * (res - 1)).astype(int)
    shown_rows, shown_cols = np.nonzero(front)
    for a, b in [(rows, shown_rows), (cols, shown_cols)]:
        assert abs(a.min() - b.min()) <= 1 and abs(a.max() - b.max()) <= 1, (a.min(), b.min(), a.max(), b.max())
    # A head the slab cuts is closed, as closed_slab closes it for the previews.
    verts, faces, _, _ = M.sample_mesh(bank, 'face')
    assert len(faces) and mesh.is_closed(faces)


def test_sample_mesh_reads_the_level_and_refuses_bad_samples(tmp_path):
    grid = slab_grid(RES)
    ball = balls_volume(grid, [BALL])
    bank = Bank(mesh_bank(tmp_path / 'b5', dict(ball=ball), pictures=False, meta=dict(preview_level=5.0)))
    radius = np.linalg.norm(M.sample_mesh(bank, 'ball')[0] - BALL[0], axis=1)
    assert abs(radius.mean() - (BALL[1] + 5 / 400)) < grid.voxel_size / 4   # sigma = 10 - 400 sdf reaches 5 outside.
    for meta, message in [(dict(preview_level='10'), 'preview_level must be a finite number'),
            (dict(preview_level=True), 'preview_level must be a finite number'),
            (dict(slab=dict(resolution=64)), 'no usable slab description'),
            (dict(mesh_convention='theirs'), 'no usable slab description'),
            (dict(slab=None), 'no usable slab description')]:
        root = tmp_path / f'bad{len(os.listdir(tmp_path))}'
        bank = Bank(mesh_bank(root, dict(ball=ball), pictures=False, meta=meta))
        with pytest.raises(BankError, match=message):
            M.sample_mesh(bank, 'ball')
    bank = Bank(mesh_bank(tmp_path / 'json', dict(ball=ball), pictures=False))
    for text in ('{"slab": ', '[1, 2]'):
        with open(os.path.join(bank.path('ball'), 'meta.json'), 'w') as f:
            f.write(text)
        with pytest.raises(BankError, match='meta.json: '):
            M.sample_mesh(bank, 'ball')
    bank = Bank(mesh_bank(tmp_path / 'shape', dict(ball=ball), pictures=False))
    np.save(os.path.join(bank.path('ball'), 'sigma_slab.npy'), ball[:-1])
    with pytest.raises(BankError, match='but meta.json says'):
        M.sample_mesh(bank, 'ball')
    with pytest.raises(BankError, match='no finished sample'):
        M.sample_mesh(bank, 'nope')


def test_cache_keeps_the_last_used_samples(tmp_path):
    grid = slab_grid(RES)
    bank = Bank(mesh_bank(tmp_path / 'bank', {f'b{i}': balls_volume(grid, [(BALL[0], 0.06 + 0.02 * i)]) for i in range(3)},
        pictures=False))
    cache = M.MeshCache(size=2)
    first = cache.get(bank, 'b0')
    assert cache.get(bank, 'b0') is first                                   # Kept, not remade.
    cache.get(bank, 'b1'), cache.get(bank, 'b0'), cache.get(bank, 'b2')     # b1 was used longest ago.
    assert [k[1] for k in cache.files] == ['b0', 'b2']
    v, f, _, _ = M.decode(gzip.decompress(first))
    assert len(f) and np.allclose(np.linalg.norm(v - BALL[0], axis=1).mean(), 0.06, atol=grid.voxel_size / 4)

#----------------------------------------------------------------------------
# The server's routes.

def get(port, path, gzip_ok):
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    conn.request('GET', path, headers={'Accept-Encoding': 'gzip' if gzip_ok else 'identity'})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheader('Content-Encoding'), data


def test_mesh_route_serves_bank_samples_and_nothing_else(tmp_path):
    grid = slab_grid(RES)
    bank_dir = mesh_bank(tmp_path / 'bank', dict(seed000000=balls_volume(grid, [BALL]), seed000001=face_volume(grid, 0.04)))
    outside = tmp_path / 'outside.npy'
    np.save(outside, face_volume(grid, 0.07))
    linked = os.path.join(bank_dir, 'seed000002')                           # A sample whose slab links out of the bank.
    os.makedirs(linked)
    os.symlink(outside, os.path.join(linked, 'sigma_slab.npy'))
    with open(os.path.join(bank_dir, 'seed000000', 'meta.json')) as f:
        meta = json.load(f)
    with open(os.path.join(linked, 'meta.json'), 'w') as f:
        json.dump(dict(meta, id='seed000002'), f)
    os.makedirs(os.path.join(bank_dir, 'seed000099'))                       # Unfinished: a slab, no meta.json.
    np.save(os.path.join(bank_dir, 'seed000099', 'sigma_slab.npy'), face_volume(grid))
    with Running(bank_dir, tmp_path / 'l.jsonl') as s:
        status, encoding, data = get(s.port, '/bank/seed000000/mesh.bin', gzip_ok=True)
        assert status == 200 and encoding == 'gzip'
        v, f, _, _ = M.decode(gzip.decompress(data))
        want = M.sample_mesh(s.bank, 'seed000000')
        assert np.array_equal(f, want[1]) and np.abs(v - want[0]).max() < 1e-5
        status, encoding, raw = get(s.port, '/bank/seed000000/mesh.bin', gzip_ok=False)
        assert status == 200 and encoding is None and raw == gzip.decompress(data)
        assert len(data) < len(raw) * 0.7
        status, _, js = get(s.port, '/mesh_viewer.js', gzip_ok=False)
        assert status == 200 and b'MeshViewer' in js
        for path in ['/bank/seed000099/mesh.bin', '/bank/nope/mesh.bin', '/bank/seed000002/mesh.bin', '/bank/../mesh.bin',
                '/bank/%2e%2e/mesh.bin', '/bank/seed000000/../seed000001/mesh.bin', '/bank/seed000000/sigma_slab.npy',
                '/bank/seed000000/mesh.bin/', '/bank//mesh.bin', '/bank/seed000000/meta.json', '/mesh.bin', '/mesh_viewer.js/']:
            status, data = request(s.port, 'GET', path)
            assert status == 404 and json.loads(data) == dict(error='not found'), path
        assert get(s.port, '/bank/seed000001/mesh.bin', gzip_ok=True)[0] == 200
    bank_dir = fake_bank(tmp_path / 'pictures')                             # Pictures only: no slab to mesh.
    with Running(bank_dir, tmp_path / 'l2.jsonl') as s:
        assert request(s.port, 'GET', '/bank/seed000000/mesh.bin')[0] == 404
        assert request(s.port, 'GET', '/api/state')[0] == 200               # And it goes on serving.

def test_mesh_route_takes_the_pages_opaque_references(tmp_path):
    grid = slab_grid(RES)
    bank_dir = mesh_bank(tmp_path / 'bank', dict(seed000000=balls_volume(grid, [BALL]), seed000001=face_volume(grid, 0.04)))
    bank = Bank(bank_dir)
    tokens = {'t0k3n': (bank, 'seed000001')}                                 # What a study page shows for a side.
    server = label_server.LabelServer(('127.0.0.1', 0), bank, session(bank_dir, tmp_path / 'l.jsonl'), samples=tokens.get)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        status, _, data = get(port, '/bank/t0k3n/mesh.bin', gzip_ok=False)
        assert status == 200 and np.array_equal(M.decode(data)[1], M.sample_mesh(bank, 'seed000001')[1])
        for path in ['/bank/seed000001/mesh.bin', '/bank/seed000000/mesh.bin', '/bank/t0k3n0/mesh.bin']:
            assert request(port, 'GET', path)[0] == 404, path                # Ids are not references here.
    finally:
        server.shutdown()
        server.server_close()

#----------------------------------------------------------------------------
# The page in Chromium.

PIXELS = """const c = document.querySelector(arguments[0] + ' canvas.view3d'), g = c.getContext('webgl');
const px = new Uint8Array(c.width * c.height * 4);
g.readPixels(0, 0, c.width, c.height, g.RGBA, g.UNSIGNED_BYTE, px);
let shaded = 0; for (let i = 0; i < px.length; i += 4) if (px[i] < 250) shaded++;
return [c.toDataURL(), shaded / (c.width * c.height)];"""

DECODE = """const done = arguments[arguments.length - 1];
fetch(arguments[0]).then((r) => r.arrayBuffer()).then((b) => { const m = MeshViewer.decode(b);
  done([m.positions.length / 3, m.indices.length / 3, Array.from(m.positions.slice(0, 30)), m.indices.reduce((a, x) => a + x, 0)]);
}).catch((e) => done(String(e)));"""


def shown_3d(driver):
    """Does each side (left, right) show its 3D view?"""
    return [driver.execute_script(f"return document.getElementById('{side}').classList.contains('view3d-on')")
        for side in ('left', 'right')]


@pytest.mark.slow
def test_a_drag_turns_both_sides_and_judging_goes_on(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.support.ui import WebDriverWait
    grid = slab_grid(RES)
    bank_dir = mesh_bank(tmp_path / 'bank', {f'face{i:02d}': face_volume(grid, n) for i, n in enumerate([0.03, 0.05, 0.07])})
    out = tmp_path / 'l.jsonl'
    driver = chromium_driver()
    try:
        with Running(bank_dir, out, annotator='carol', target=3) as s:
            driver.get(s.url + '/')
            wait = WebDriverWait(driver, 15)
            wait.until(lambda d: d.find_element('id', 'status').text == 'ready')
            wait.until(lambda d: all(shown_3d(d)))
            for side in ('left', 'right'):                                  # The canvas replaces the stills.
                assert driver.find_element('css selector', f'#{side} canvas.view3d').is_displayed()
                assert not driver.find_element('css selector', f'#{side} .views').is_displayed()
            left_id = driver.find_element('css selector', '#left .id').text
            count, tris, positions, index_sum = driver.execute_async_script(DECODE, f'/bank/{left_id}/mesh.bin')
            v, f, _, _ = M.decode(gzip.decompress(s.server.meshes.get(s.bank, left_id)))
            assert (count, tris, index_sum) == (len(v), len(f), int(f.sum()))   # The page reads what Python writes.
            assert np.allclose(positions, v[:10].ravel(), atol=1e-6)
            before = {side: driver.execute_script(PIXELS, f'#{side}') for side in ('left', 'right')}
            assert all(0.05 < shaded < 0.95 for _, shaded in before.values()), before   # A shape, not a blank.
            canvas = driver.find_element('css selector', '#left canvas.view3d')
            ActionChains(driver).move_to_element(canvas).click_and_hold().move_by_offset(90, 25).release().perform()
            after = {side: driver.execute_script(PIXELS, f'#{side}') for side in ('left', 'right')}
            for side in ('left', 'right'):
                assert after[side][0] != before[side][0], side              # Both turned, the right without a touch.
            assert shown_3d(driver) == [True, True]               # A drag is not a click: no RGB render.
            camera = driver.execute_script('return MeshViewer.camera')
            assert camera['yaw'] < -20 and camera['pitch'] > 5
            right = driver.find_element('css selector', '#right canvas.view3d')
            ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(right), 0, -300).perform()
            zoomed = {side: driver.execute_script(PIXELS, f'#{side}') for side in ('left', 'right')}
            assert all(zoomed[side][1] > after[side][1] for side in ('left', 'right'))   # Closer: more of it shaded.
            camera = driver.execute_script('return MeshViewer.camera')
            assert camera['zoom'] > 1.2
            body = driver.find_element('tag name', 'body')
            shown = (left_id, driver.find_element('css selector', '#right .id').text)
            body.send_keys('1')                                             # Keys judge as before.
            wait.until(lambda d: d.find_element('tag name', 'body').get_attribute('data-saved') == '1')
            assert (read_lines(out)[0]['a'], read_lines(out)[0]['b'], read_lines(out)[0]['choice']) == (*shown, 'a')
            wait.until(lambda d: all(shown_3d(d)))   # The next pair's meshes, same camera.
            assert driver.execute_script('return MeshViewer.camera') == camera
            driver.find_element('id', 'left').click()                      # A click still shows the RGB render.
            assert driver.find_element('css selector', '#left .rgb img').is_displayed()
            assert not driver.find_element('css selector', '#left canvas.view3d').is_displayed()
    finally:
        driver.quit()


@pytest.mark.slow
def test_without_webgl_the_stills_show_and_judging_works(tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    grid = slab_grid(RES)
    bank_dir = mesh_bank(tmp_path / 'bank', {f'face{i:02d}': face_volume(grid, n) for i, n in enumerate([0.03, 0.05, 0.07])})
    out = tmp_path / 'l.jsonl'
    driver = chromium_driver(('--disable-3d-apis',))
    try:
        with Running(bank_dir, out, annotator='dan', target=3) as s:
            driver.get(s.url + '/')
            wait = WebDriverWait(driver, 15)
            wait.until(lambda d: d.find_element('id', 'status').text == 'ready')
            assert driver.execute_script("return document.createElement('canvas').getContext('webgl')") is None
            for side in ('left', 'right'):
                pictures = driver.find_elements('css selector', f'#{side} .views img')
                assert len(pictures) == 3 and all(p.is_displayed() for p in pictures)
                wait.until(lambda d: d.execute_script(f"return document.querySelector('#{side} .views img').naturalWidth") == 32)
                assert not driver.find_element('css selector', f'#{side} canvas.view3d').is_displayed()
            assert shown_3d(driver) == [False, False]
            body = driver.find_element('tag name', 'body')
            shown = tuple(driver.find_element('css selector', f'#{side} .id').text for side in ('left', 'right'))
            body.send_keys(Keys.ARROW_RIGHT)
            wait.until(lambda d: d.find_element('tag name', 'body').get_attribute('data-saved') == '1')
            assert driver.find_element('id', 'status').text == 'saved \u2713 right better'
            record = read_lines(out)[0]
            assert (record['a'], record['b'], record['choice'], record['annotator']) == (*shown, 'b', 'dan')
            assert shown_3d(driver) == [False, False]
    finally:
        driver.quit()

#----------------------------------------------------------------------------
