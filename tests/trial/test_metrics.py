import math

import torch

from hpsearch.trial.metrics import energy_per_sample, evaluate_logits, feature_adaptation


def test_energy_matches_hand_computed_values():
    # Row 1: q = (1/2, 1/2), y = 0 -> e - q = (1/2, -1/2), norm sqrt(1/2).
    # Row 2: q = (3/4, 1/4), y = 1 -> e - q = (-3/4, 3/4), norm 3/4 * sqrt(2).
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([0, 1])
    per_sample = energy_per_sample(logits, y)
    torch.testing.assert_close(per_sample, torch.tensor([math.sqrt(0.5), 0.75 * math.sqrt(2.0)]))
    ev = evaluate_logits([(logits, y)])
    assert abs(ev.energy - (math.sqrt(0.5) + 0.75 * math.sqrt(2.0)) / 2) < 1e-6
    assert ev.accuracy == 0.5  # row 1 ties -> argmax 0 is right; row 2 predicts 0, wrong
    expected_loss = (math.log(2.0) + -math.log(0.25)) / 2
    assert abs(ev.loss - expected_loss) < 1e-6


def test_energy_is_zero_for_confident_right_and_sqrt2_for_confident_wrong():
    logits = torch.tensor([[50.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    per_sample = energy_per_sample(logits, torch.tensor([0, 1]))
    assert per_sample[0] < 1e-6
    assert abs(float(per_sample[1]) - math.sqrt(2.0)) < 1e-6


def test_feature_adaptation_measures_the_move():
    z0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    zT = torch.tensor([[0.0, 1.0], [0.0, 4.0]])
    a = feature_adaptation(z0, zT)
    assert abs(a.l2 - (math.sqrt(2.0) + 2.0) / 2) < 1e-9
    assert abs(a.cos - 0.5) < 1e-9  # orthogonal (0) and parallel (1)
    assert abs(a.dot - 4.0) < 1e-9  # 0 and 8
    assert abs(a.norm_T - 2.5) < 1e-9 and abs(a.norm_0 - 1.5) < 1e-9
