"""The network: the notes' Net exactly when batchnorm/dropout are off, and any size / class count."""

import pytest
import torch

from handsigns.model import Classifier, Net, feature_side


@pytest.mark.parametrize(("size", "classes"), [(8, 2), (28, 10), (50, 3), (64, 6), (100, 4), (128, 12)])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_output_shape_for_any_size_and_class_count(size, classes, batchnorm):
    net = Net(classes, image_size=size, num_channels=4, batchnorm=batchnorm, dropout=0.2 if batchnorm else 0)
    net.eval()
    out = net(torch.randn(3, 3, size, size))
    assert out.shape == (3, classes)
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)  # log-softmax
    assert net.fc1.in_features == 4 * 4 * feature_side(size) ** 2


def test_plain_net_is_exactly_the_notes_net():
    net = Net(6, image_size=64, num_channels=32, batchnorm=False, dropout=0.0)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {
        "conv1.weight": (32, 3, 3, 3),
        "conv1.bias": (32,),
        "conv2.weight": (64, 32, 3, 3),
        "conv2.bias": (64,),
        "conv3.weight": (128, 64, 3, 3),
        "conv3.bias": (128,),
        "fc1.weight": (128, 32 * 4 * 8 * 8),
        "fc1.bias": (128,),  # the notes' view(-1, c*4*8*8)
        "fc2.weight": (6, 128),
        "fc2.bias": (6,),
    }
    # Same function as the notes' forward: conv -> pool -> relu (x3), fc1 -> relu, fc2, log_softmax.
    x = torch.randn(2, 3, 64, 64)
    f = torch.nn.functional
    s = x
    for conv in (net.conv1, net.conv2, net.conv3):
        s = f.relu(f.max_pool2d(conv(s), 2))
    s = s.view(-1, 32 * 4 * 8 * 8)
    expected = f.log_softmax(net.fc2(f.relu(net.fc1(s))), dim=1)
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_batchnorm_and_dropout_add_cs230_layers():
    net = Net(6, num_channels=8, batchnorm=True, dropout=0.5)
    names = set(net.state_dict())
    assert {"bn1.weight", "bn2.running_mean", "bn3.bias", "fcbn1.weight"} <= names
    assert isinstance(net.dropout, torch.nn.Dropout)


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="too small"):
        Net(6, image_size=7)


def test_classifier_takes_uint8_and_returns_probabilities():
    net = Net(3, image_size=16, num_channels=4).eval()
    module = Classifier(net, [0.5, 0.4, 0.3], [0.2, 0.2, 0.2]).eval()
    pixels = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    probs = module(pixels)
    x = (pixels.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2
    assert torch.allclose(probs, net(x).exp(), atol=1e-6)


def test_classifier_gives_uint8_and_unit_float_pixels_the_same_log_probs():
    """Training feeds augmented [0, 1] floats, evaluation and export uint8: one normalisation for both."""
    module = Classifier(Net(3, image_size=16, num_channels=4), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]).eval()
    pixels = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(module.log_probs(pixels), module.log_probs(pixels.float().div_(255.0)))
