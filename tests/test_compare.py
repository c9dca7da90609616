"""Edit methods head to head in the audit's constructed world (tests/test_audit.py): a linear
decoder whose axes are Male, Smiling, Young, Eyeglasses and a judge that reads exactly those."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.compare import (CompareConfig, ConditionalEdit, VectorEdit, at_equal_efficacy, compare,
                              comparison_json, comparison_markdown)
from test_audit import AXES, Bank, LinearJudge, LinearLatent, write_world

SMILE = AXES.index("Smiling")


class LinearConditional(LinearLatent):
    """A conditional model of the same world: y (Smiling as +1 / -1) draws 0.5 * y on the Smiling
    axis; the code keeps the rest. Changing y moves Smiling only."""
    config = SimpleNamespace(condition=("Smiling",))

    def condition_of(self, labels):
        return labels[:, [attribute_index("Smiling")]].float() * 2 - 1

    def encode(self, x, y):
        mu, logvar = super().encode(x)
        mu = mu.clone()
        mu[:, SMILE] -= 0.5 * y[:, 0]
        return mu, logvar

    def decode(self, z, y):
        z = z.clone()
        z[:, SMILE] += 0.5 * y[:, 0]
        return super().decode(z)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    world = write_world(tmp_path_factory.mktemp("world") / "cache")
    judge = SimpleNamespace(model=LinearJudge(), can_judge=np.ones(len(ATTRIBUTES), bool))
    methods = [VectorEdit(LinearLatent(), Bank(), "naive"), VectorEdit(LinearLatent(), Bank(), "balanced"),
               ConditionalEdit(LinearConditional(), strengths=(-1.0, -0.5, 0.5, 1.0))]
    config = CompareConfig(attributes=("Smiling",), faces=30, batch_size=16)
    return compare(world, judge, methods, config, progress=False)


def test_the_conditional_edit_moves_the_target_and_not_male_as_naive_does(comparison):
    male = attribute_index("Male")
    naive = comparison.edits["naive"]["Smiling"][2.0]
    cond = comparison.edits["conditional"]["Smiling"][1.0]
    assert naive.efficacy > 0.3 and cond.efficacy > 0.3
    assert naive.leakage[male] > 1.0  # the naive vector is Male + Smiling
    assert abs(cond.leakage[male]) < 1e-4 and abs(comparison.edits["balanced"]["Smiling"][2.0].leakage[male]) < 1e-4
    assert cond.faces == 30
    # every method reconstructs this world exactly (up to 8-bit pixels)
    assert min(comparison.reconstruction_psnr.values()) > 40


def test_methods_are_compared_where_their_efficacies_are_equal(comparison):
    eq = at_equal_efficacy(comparison, "Smiling", "Male", positive=True)
    largest = [max(st.efficacy for s, st in comparison.edits[m]["Smiling"].items() if s > 0)
               for m in comparison.methods]
    assert eq["efficacy"] == pytest.approx(min(largest))
    assert eq["naive"]["Male"] > 0.5 and abs(eq["conditional"]["Male"]) < 1e-4
    # a method that never reaches the common efficacy is marked, not compared
    weak = at_equal_efficacy(comparison, "Smiling", "Male", positive=True, min_efficacy=min(largest) + 1e-3)
    small = comparison.methods[int(np.argmin(largest))]
    assert weak["efficacy"] > min(largest) and np.isnan(weak[small]["Male"])
    assert weak[small]["largest"] == pytest.approx(min(largest))
    removing = at_equal_efficacy(comparison, "Smiling", "Male", positive=False)
    assert removing["efficacy"] < 0
    doc = comparison_json(comparison)
    assert set(doc["edits"]) == {"naive", "balanced", "conditional"}
    assert "| conditional | +1 | 30 |" in comparison_markdown(comparison)
