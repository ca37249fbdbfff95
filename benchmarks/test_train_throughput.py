"""Smoke run of ``train_throughput.py`` (the VAE training images/s and project_volume share) on the CPU."""

import json

from train_throughput import main


def test_train_throughput_smoke(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["--device", "cpu", "--threads", "1", "--grids", "16", "--batch", "4", "--steps", "2",
                 "--warmup", "1", "--json", str(out), "--markdown", str(tmp_path / "t.md")]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert r["grid"] == 16 and r["batch"] == 4 and r["images_per_s"] > 0
    # the renderer was timed inside the steps: both passes ran, and they are part of the step
    assert r["project_volume_forward_ms"] > 0 and r["project_volume_backward_ms"] > 0
    assert 0 < r["project_volume_share"] < 1
    assert "16^3 / 16 px" in (tmp_path / "t.md").read_text()
