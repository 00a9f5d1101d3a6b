"""Autosave after a restore that did not cover every value writes at once."""

from __future__ import annotations

import json
from pathlib import Path

from caioc.ioc import Autosave, PVGroup, pvproperty


class Settings(PVGroup):
    gain = pvproperty(2.0, autosave=True)
    offset = pvproperty(0.5, autosave=True)


def test_no_file_yet_means_the_first_save_writes(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    saver = Autosave(Settings("s:"), path)
    assert saver.restore() == []
    assert saver.save()  # nothing on disk matches what is served: write it
    assert json.loads(path.read_text())["values"] == {"s:gain": 2.0, "s:offset": 0.5}
    assert not saver.save()  # and then only on change


def test_a_file_missing_a_value_is_completed_by_the_first_save(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    Autosave(Settings("s:"), path).save()
    document = json.loads(path.read_text())
    del document["values"]["s:offset"]  # as if the PV was added after that save
    document["values"]["s:gain"] = 3.0
    path.write_text(json.dumps(document))
    group = Settings("s:")
    saver = Autosave(group, path)
    assert saver.restore() == ["s:gain"]
    assert group.gain.value == 3.0
    assert saver.save()
    assert json.loads(path.read_text())["values"] == {"s:gain": 3.0, "s:offset": 0.5}


def test_a_complete_restore_does_not_rewrite_the_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    Autosave(Settings("s:"), path).save()
    saver = Autosave(Settings("s:"), path)
    assert sorted(saver.restore()) == ["s:gain", "s:offset"]
    assert not saver.save()
