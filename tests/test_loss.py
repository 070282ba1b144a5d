import math

import torch

from model.loss import clip_loss, distance_logits, multitask_loss

R2 = math.sqrt(2)


def three_pairs():
    image = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 1, 0]])  # texts 2 and 3 are the same
    return image, text


def test_logits_are_negative_euclidean_distance_times_scale():
    image, text = three_pairs()
    logits = distance_logits(image, text, torch.tensor(2.0))
    expected = -2.0 * torch.tensor([[0, R2, R2], [R2, 0, 0], [R2, R2, R2]])
    torch.testing.assert_close(logits, expected)


def test_infonce_on_a_hand_computed_3x3_example():
    image, text = three_pairs()
    # Rows (image -> text), target i: logits row1 [0,-√2,-√2], row2 [-√2,0,0], row3 all -√2.
    rows = [math.log(1 + 2 * math.exp(-R2)), math.log(2 + math.exp(-R2)), math.log(3)]
    # Columns (text -> image): col1 [0,-√2,-√2] t=0, col2 [-√2,0,-√2] t=1, col3 same, t=2.
    cols = [
        math.log(1 + 2 * math.exp(-R2)),
        math.log(1 + 2 * math.exp(-R2)),
        R2 + math.log(1 + 2 * math.exp(-R2)),
    ]
    expected = (sum(rows) / 3 + sum(cols) / 3) / 2
    loss = clip_loss(image, text, torch.tensor(1.0))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_label_aware_loss_on_a_hand_computed_example():
    image = torch.eye(3)
    distinct = torch.tensor([[1.0, 0, 0], [0, 1, 0]])  # cases 2 and 3 share text 2
    index = torch.tensor([0, 1, 1])
    # Rows over the 2 distinct texts: [0,-√2] t0, [-√2,0] t1, [-√2,-√2] t1.
    rows = [math.log(1 + math.exp(-R2)), math.log(1 + math.exp(-R2)), math.log(2)]
    # Text 1 over images [0,-√2,-√2] -> image 1; text 2 over [-√2,0,-√2] -> images 2 and 3 (½ each).
    cols = [math.log(1 + 2 * math.exp(-R2)), math.log(1 + 2 * math.exp(-R2)) + R2 / 2]
    expected = (sum(rows) / 3 + sum(cols) / 2) / 2
    loss = clip_loss(image, distinct, torch.tensor(1.0), index)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_label_aware_differs_from_plain_infonce_when_texts_repeat():
    image = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0.8, 0.6]], requires_grad=True)
    distinct = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    index = torch.tensor([0, 1, 1])
    plain = clip_loss(image, distinct[index], torch.tensor(10.0))
    aware = clip_loss(image, distinct, torch.tensor(10.0), index)
    assert not math.isclose(plain.item(), aware.item(), rel_tol=1e-3)


def test_multitask_loss_skips_unknown_values():
    logits = [torch.tensor([[2.0, 0.0], [0.0, 2.0]])]
    labels = torch.tensor([[0], [-1]])
    only_first = torch.nn.functional.cross_entropy(logits[0][:1], labels[:1, 0])
    assert math.isclose(multitask_loss(logits, labels).item(), only_first.item(), rel_tol=1e-6)
