"""space-clip-info, run as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from space_clip_ros.model import SpaceClip, make_record, save_checkpoint


def _script(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    assert Path(found).exists(), f"console script {name} is not installed"
    return found


@pytest.mark.slow  # full-size ViT-B/16
def test_info_reference_json():
    out = subprocess.run([_script("space-clip-info"), "--json"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["parameters"]["trainable_decoder"] == 12_050_996
    assert info["backbone"]["grid"] == [14, 14] and info["backbone"]["width"] == 768
    assert "RANDOM weights" in out.stderr


@pytest.mark.slow  # builds and saves a model
def test_info_table_from_checkpoint(tmp_path, tiny_model_config):
    model = SpaceClip(tiny_model_config)
    save_checkpoint(tmp_path / "c", model.decoder.state_dict(), make_record(model))
    out = subprocess.run(
        [_script("space-clip-info"), "--checkpoint", str(tmp_path / "c")], capture_output=True, text=True, check=True
    )
    expected = model.parameter_counts()["trainable_decoder"]
    assert f"{expected:,}" in out.stdout
    assert "width 64" in out.stdout


@pytest.mark.slow  # starts the console script
def test_info_reports_a_missing_checkpoint(tmp_path):
    out = subprocess.run(
        [_script("space-clip-info"), "--checkpoint", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "checkpoint file missing" in out.stderr


def test_help_does_not_import_torch(run_python):
    out = run_python("""
        import sys
        from space_clip_ros.cli import info
        try:
            info.main(['--help'])
        except SystemExit as exit:
            assert exit.code == 0
        assert 'torch' not in sys.modules, 'space-clip-info --help imported torch'
    """)
    assert out.returncode == 0, out.stderr
    assert "--checkpoint" in out.stdout
