"""Access groups: each group's index lists its rooms only, and a room's pages link only within its path.

A web server grants an instructor by path (their group's index, rooms/SITE/ROOM.html and
rooms/SITE/ROOM/); these tests check the collector writes a layout where that is enough.
"""

import posixpath
from pathlib import Path

import pytest
from sqlalchemy import insert
from test_dashboard import parsed, status

from edge_agent.collector.config import parse_collector_config
from edge_agent.collector.dashboard import Dashboard
from edge_agent.collector.index_pages import room_matches
from edge_agent.collector.pages import file_name
from edge_agent.collector.store import windows_table
from edge_agent.common.config import ConfigError
from edge_agent.common.contract import EMOTIONS
from support.windows import T0, lesson

WEEK = 7 * 86400


def three_rooms(store):
    """north/101 with lessons over three weeks, north/102 and south/201 with one each, and a camera each."""
    for week in range(3):
        store.add_windows(lesson([week * WEEK // 60 + m for m in range(30)]))
    store.add_windows(lesson(range(0, 20), room="102", devices=("pi-102a",)))
    store.add_windows(lesson(range(0, 20), site="south", room="201", devices=("pi-201a",)))
    store.set_status(status("pi-101a"), site="north", room="101", received_at=T0)
    store.set_status(status("pi-102a"), site="north", room="102", received_at=T0)
    return T0 + 2 * WEEK + 40 * 60


def site_paths(out, page):
    """Every link and image of ``page`` as a path from the output root (None if it leaves the root)."""
    found = parsed(page)
    here = page.parent.relative_to(out).as_posix()
    paths = []
    for target in [*found.links, *(image["src"] for image in found.images)]:
        joined = posixpath.normpath(posixpath.join(here, target))
        paths.append(None if joined.startswith("..") else joined)
    return paths


def test_a_group_index_lists_its_rooms_only_and_no_devices(store, tmp_path):
    now = three_rooms(store)
    out = tmp_path / "www"
    Dashboard(out, history_weeks=4, access={"physics": ("north/101",), "south": ("south/*",),
                                            "it": ("all",)}).build(store, now=now)
    physics = (out / "groups" / "physics" / "index.html").read_text()
    assert "north/101" in physics and "north/102" not in physics and "south/201" not in physics
    assert 'id="devices"' not in physics and "devices/" not in physics
    assert 'id="devices"' in (out / "index.html").read_text()
    paths = site_paths(out, out / "groups" / "physics" / "index.html")
    assert "rooms/north/101.html" in paths
    for path in paths:
        assert path == "groups/physics/index.html" or path.startswith(("rooms/north/101.html", "rooms/north/101/")), \
            path
        assert (out / path).is_file(), path
    south = (out / "groups" / "south" / "index.html").read_text()
    assert "south/201" in south and "north/" not in south
    every = (out / "groups" / "it" / "index.html").read_text()
    assert all(room in every for room in ("north/101", "north/102", "south/201"))


def test_a_rooms_pages_and_images_link_only_within_its_path_the_indexes_and_devices(store, tmp_path):
    now = three_rooms(store)
    out = tmp_path / "www"
    Dashboard(out, history_weeks=4, access={"physics": ("north/101",)}).build(store, now=now)
    room = out / "rooms" / "north" / "101"
    pages = [out / "rooms" / "north" / "101.html", *room.glob("*.html")]
    assert len(pages) > 5
    images = 0
    for page in pages:
        for path in site_paths(out, page):
            assert path is not None, page
            assert (out / path).is_file(), f"{page}: {path}"
            if path.endswith(".svg"):
                images += 1
                assert path.startswith("rooms/north/101/"), f"{page}: {path}"
            else:
                # The nav's way home is the full index (the web server sends an instructor to
                # their group's); a camera's page is IT's, and refused to anyone else by path.
                assert path.startswith(("rooms/north/101.html", "rooms/north/101/", "devices/")) \
                    or path == "index.html", f"{page}: {path}"
    assert images > 5
    # Every file of the room lies under its path: nothing of room 101 outside rooms/north/101(.html|/).
    outside = [p for p in (out / "rooms" / "north").iterdir()
               if p.name.startswith("101") and p.name not in ("101", "101.html")]
    assert outside == []


def test_odd_names_stay_escaped_and_inside_their_room_path_in_a_group_index(store, tmp_path):
    room = '<b onclick="x">1</b>/../../evil'
    counts = dict.fromkeys(EMOTIONS, 0) | {"happy": 5}
    with store.engine.begin() as connection:
        connection.execute(insert(windows_table), [
            {"device": "pi-x", "window_start": T0 + 60 * m, "site": "north", "room": room, "window_s": 60, "seq": m,
             "frames": 60, "faces": 5, "faces_per_frame_median": 5, **counts, "suppressed": False, "model": "m",
             "received_at": T0} for m in range(10)])
    out = tmp_path / "www"
    Dashboard(out, access={"north": ("north/*",), "exact": ("north/101",)}).build(store, now=T0 + 11 * 60)
    index = out / "groups" / "north" / "index.html"
    text = index.read_text()
    assert "<b onclick" not in text and "&lt;b onclick=&#34;x&#34;&gt;1&lt;/b&gt;/../../evil" in text
    hashed = f"rooms/north/{file_name(room)}"
    assert hashed + ".html" in site_paths(out, index)
    for path in site_paths(out, index):
        assert path == "groups/north/index.html" or path.startswith((hashed + ".html", hashed + "/")), path
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    assert "evil" not in (out / "groups" / "exact" / "index.html").read_text()


def test_a_group_dropped_from_the_settings_loses_its_index_at_the_next_start(store, tmp_path):
    now = three_rooms(store)
    out = tmp_path / "www"
    Dashboard(out, access={"physics": ("north/101",), "south": ("south/*",)}).build(store, now=now)
    assert (out / "groups" / "south" / "index.html").is_file()
    Dashboard(out, access={"physics": ("north/101",)}).build(store, now=now)
    assert not (out / "groups" / "south" / "index.html").exists()
    assert (out / "groups" / "physics" / "index.html").is_file()


def test_room_patterns_match_site_and_room_as_globs():
    assert room_matches(("north", "101"), ["north/101"])
    assert room_matches(("north", "101"), ["north/1*"]) and not room_matches(("north", "201"), ["north/1*"])
    assert room_matches(("south", "x"), ["all"]) and room_matches(("south", "x"), ["*/*"])
    assert not room_matches(("north", "101"), ["north/10"]) and not room_matches(("north", "1010"), ["north/101"])
    assert not room_matches(("north", "a/b"), ["north/a*"])


def test_the_access_setting_is_checked_and_names_the_key(tmp_path):
    config = parse_collector_config("dashboard:\n  access: {physics: [north/101, 'south/*'], it: [all]}\n",
                                    base=Path(tmp_path))
    assert config.dashboard.access == {"physics": ("north/101", "south/*"), "it": ("all",)}
    for text, words in (("{physics: [north]}", "group physics: room pattern 'north'"), ("{physics: []}", "physics"),
                        ("{physics: ['../x/101']}", "../x/101"), ("{'..': [all]}", ".."),
                        ("{'a/b': [all]}", "a/b"), ('{physics: ["north/101\\n"]}', "'north/101\\n'")):
        with pytest.raises(ConfigError) as raised:
            parse_collector_config(f"dashboard:\n  access: {text}\n", base=Path(tmp_path))
        message = str(raised.value)
        assert "access" in message and words in message, message


def test_a_name_ending_in_a_newline_never_names_a_file():
    """The contract's pattern ends in $, which Python's re also matches before a final newline."""
    assert file_name("101") == "101"
    assert file_name("101\n").startswith("~") and "\n" not in file_name("101\n")
