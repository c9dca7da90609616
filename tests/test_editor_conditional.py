"""The editor's "conditional" method: a CVAE beside the vector bank, its label sliders."""

import numpy as np
import pytest
import torch

from faceedit.attributes import ATTRIBUTES
from faceedit.bundle import load_bundle, save_bundle
from faceedit.cvae import CVAE, CVAEConfig
from faceedit.editor import Editor
from test_ui import SIZE, tiny_paths  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def editors(tiny_paths, tmp_path_factory):  # noqa: F811
    bundle, bank, cache = tiny_paths
    torch.manual_seed(0)
    cvae = CVAE(CVAEConfig(image_size=SIZE, latent_dim=8, channels=(8, 16), labels=("Male", "Smiling"))).eval()
    with torch.no_grad():
        cvae.decoder.head.weight.mul_(20.0)  # untrained, but a decoder that answers its inputs
    path = save_bundle(tmp_path_factory.mktemp("cvae") / "cvae", cvae, {"cache": "test"})
    return Editor.load(bundle, bank, threads=1), Editor.load(bundle, bank, threads=1, cvae=path)


def test_conditional_method_changes_the_labels_and_keeps_the_code(editors):
    plain, cond = editors
    assert "conditional" in cond.methods and "conditional" not in plain.methods
    enc = cond.encode_example(0)
    assert enc.z.shape == (plain.dim + 8 + 2,)
    # the VAE's part and every vector edit are the plain editor's
    assert torch.equal(enc.z[: plain.dim], plain.encode_example(0).z)
    np.testing.assert_array_equal(cond.edit(enc.z, {"Smiling": 1.5}, "balanced"),
                                  plain.edit(enc.z[: plain.dim], {"Smiling": 1.5}, "balanced"))
    # the example face's own labels are y; a slider of +1 flips Smiling from -1 to +1
    row = cond.example_rows[0]
    y0 = enc.z[-2:]
    assert y0.tolist() == [2.0 * cond.cache.labels[row, ATTRIBUTES.index(a)] - 1 for a in ("Male", "Smiling")]
    edited = cond.edit_z(enc.z, {"Smiling": 1.0}, "conditional")
    assert torch.equal(edited[:-1], enc.z[:-1]) and edited[-1] == y0[1] + 2
    unchanged = cond.edit(enc.z, {"Smiling": 0.0}, "conditional")
    np.testing.assert_array_equal(unchanged, cond.decode(enc.z, conditional=True))
    assert not np.array_equal(cond.edit(enc.z, {"Smiling": 1.0}, "conditional"), unchanged)
    with pytest.raises(ValueError, match="not one of the model's conditioning labels"):
        cond.edit(enc.z, {"Eyeglasses": 1.0}, "conditional")


def test_a_photo_gets_inferred_labels_and_a_wrong_bundle_is_refused(editors, tiny_paths, real_faces):  # noqa: F811
    _, cond = editors
    enc = cond.encode(real_faces[0])
    assert set(enc.z[-2:].tolist()) <= {-1.0, 1.0}
    z, face = cond.sample(3)
    assert z.shape == enc.z.shape and face.shape == (SIZE, SIZE, 3)
    bundle, bank, _ = tiny_paths
    with pytest.raises(ValueError, match="expected a conditional VAE bundle"):
        Editor(load_bundle(bundle), cond.bank, cvae=load_bundle(bundle))
