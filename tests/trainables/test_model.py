"""The evaluation cache of layer 1's output (trainables.model.FirstLayerCache): a hit is exactly what
the layer computes, and anything that could change the output misses."""

from __future__ import annotations

import torch

from trainables import model as model_module
from trainables.model import MLP, FirstLayerCache, first_layer_cache


def frozen_mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    net = MLP(in_features=20, hidden=[8, 8])
    net.requires_grad_(False)
    return net


def test_a_hit_returns_the_layers_output_bit_for_bit_and_is_reused():
    net, x = frozen_mlp(), torch.randn(50, 20)
    cache = FirstLayerCache()
    with torch.no_grad():
        first = cache.output(net.layers[0], x)
        again = cache.output(net.layers[0], x)
        assert torch.equal(first, net.layers[0](x))
    assert again is first and len(cache.entries) == 1


def test_a_changed_weight_another_input_or_an_edited_input_misses():
    net, x = frozen_mlp(), torch.randn(50, 20)
    cache = FirstLayerCache()
    with torch.no_grad():
        cache.output(net.layers[0], x)
        assert torch.equal(cache.output(net.layers[0], x.clone()), net.layers[0](x))  # another tensor: its own entry
        assert len(cache.entries) == 2
        net.layers[0].weight[0, 0] += 1.0  # in place, as an optimiser would
        assert torch.equal(cache.output(net.layers[0], x), net.layers[0](x))
        net.layers[0].bias[0] += 1.0
        assert torch.equal(cache.output(net.layers[0], x), net.layers[0](x))
        x[0, 0] += 1.0  # the input edited in place: its version moves
        assert torch.equal(cache.output(net.layers[0], x), net.layers[0](x))
        other = frozen_mlp(seed=1)  # another foundation on the same digits
        assert torch.equal(cache.output(other.layers[0], x), other.layers[0](x))


def test_the_cache_is_bounded():
    net, cache = frozen_mlp(), FirstLayerCache(size=3)
    inputs = [torch.randn(4, 20) for _ in range(5)]
    with torch.no_grad():
        for x in inputs:
            cache.output(net.layers[0], x)
    assert len(cache.entries) == 3


def test_models_read_the_cache_only_inside_the_block_without_autograd_and_frozen(monkeypatch):
    calls = []
    real = FirstLayerCache.output

    def counting(self, layer, x):
        calls.append(x)
        return real(self, layer, x)

    monkeypatch.setattr(FirstLayerCache, "output", counting)
    net, x = frozen_mlp(), torch.randn(30, 20)
    with torch.no_grad():
        plain = net(x)
    assert calls == []  # outside the block
    with first_layer_cache(), torch.no_grad():
        assert torch.equal(net(x), plain) and torch.equal(net(x), plain)
    assert len(calls) == 2
    with first_layer_cache():
        net(x)  # autograd on: training never reads the cache
        trained = frozen_mlp()
        trained.layers[0].weight.requires_grad_(True)
        with torch.no_grad():
            trained(x)  # a trained first layer (full fine-tuning) is not cached
    assert len(calls) == 2
    assert model_module._active is False
