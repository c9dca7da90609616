"""A config.json edited by hand is checked before anything is built (issue 27): a huge size or a
wrong type is a BundleError naming the file and field, not a traceback after trying to allocate."""

from __future__ import annotations

import json
import resource

import pytest
import torch

from faceedit.bundle import BundleError, load_bundle, save_bundle
from faceedit.judge import JudgeConfig
from faceedit.model import VAE, VAEConfig
from faceedit.pca import PCAConfig

SMALL = VAEConfig(image_size=16, latent_dim=4, channels=(4, 8), blocks=0, groups=2)


@pytest.mark.parametrize("field, value, phrase", [
    ("latent_dim", 100_000_000_000, "parameters"),
    ("latent_dim", 1e11, "whole number"),
    ("image_size", 2**20, "whole number up to 1024"),
    ("channels", [4, 8] * 40, "1 to 8 widths"),
    ("channels", [4, 1_000_000], "whole number up to 4096"),
    ("blocks", "2", "whole number"),
    ("beta", "nan", "finite number"),
    ("latent_dim", True, "whole number"),
])
def test_edited_config_fails_before_building(tmp_path, field, value, phrase):
    bundle = save_bundle(tmp_path / "b", VAE(SMALL))
    doc = json.loads((bundle / "config.json").read_text())
    doc["config"][field] = float(value) if value == "nan" else value
    (bundle / "config.json").write_text(json.dumps(doc))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BundleError, match=f"config.json.*{field}.*{phrase}"):
        load_bundle(bundle)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing big built


def test_parameter_count_is_what_the_model_holds():
    for cfg in (SMALL, VAEConfig(), VAEConfig(blocks=1, norm="group")):
        model = VAE(cfg)
        held = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
        assert 0.8 * held <= cfg.parameter_count() <= 1.3 * held


def test_pca_and_judge_configs_are_bounded():
    with pytest.raises(ValueError, match="S <= 1024"):
        PCAConfig(image_size=2**20, latent_dim=8)
    with pytest.raises(ValueError, match="whole number"):
        PCAConfig(image_size=64, latent_dim=8.0)
    with pytest.raises(ValueError, match="stages"):
        JudgeConfig(stages=40)
    with pytest.raises(ValueError, match="channels"):
        JudgeConfig(width=1024, stages=6)
    JudgeConfig()
    PCAConfig()
    torch.manual_seed(0)
